package disk

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kpaas.dev/appliance/agent/earlyboot"
)

func TestWriteFATDisk(t *testing.T) {
	need(t, "fsck.vfat", "mtype", "sfdisk")
	dir := t.TempDir()
	files := map[string]Source{
		"/cluster.yaml":       FromBytes([]byte("kind: Cluster\n")),
		"/secrets/pki/ca.crt": FromBytes([]byte("cert\n")),
		"/secrets/token":      FromBytes([]byte("abcdef.0123456789abcdef\n")),
	}
	at := time.Date(2026, 1, 2, 3, 4, 6, 0, time.UTC)
	var images [][]byte
	for _, name := range []string{"a.img", "b.img"} {
		out := filepath.Join(dir, name)
		sum, err := WriteFATDisk(context.Background(), out, "KPAAS-CONFIG", "KPAASCONFIG", files, WithTime(at))
		if err != nil {
			t.Fatal(err)
		}
		if sum.Size != 10<<20 || len(sum.Files) != 3 || len(sum.Partitions) != 1 || sum.Partitions[0].Offset != 1<<20 {
			t.Errorf("summary %+v", sum)
		}
		fi, err := os.Stat(out)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("image mode %v, want 0600", fi.Mode())
		}
		if got := run(t, "sfdisk", "--verify", out); !strings.Contains(got, "No errors detected") {
			t.Errorf("sfdisk --verify: %s", got)
		}
		// fsck.vfat wants the file system on its own.
		f, _ := os.Open(out)
		fsFile := filepath.Join(dir, "fs")
		w, _ := os.Create(fsFile)
		io.Copy(w, io.NewSectionReader(f, 1<<20, 8<<20))
		w.Close()
		run(t, "fsck.vfat", "-n", fsFile)
		if got := run(t, "mtype", "-i", out+"@@1M", "::/secrets/token"); got != "abcdef.0123456789abcdef\n" {
			t.Errorf("mtype: %q", got)
		}
		parts, err := earlyboot.ReadGPT(f)
		if err != nil || len(parts) != 1 || parts[0].Name != "KPAAS-CONFIG" {
			t.Errorf("GPT: %+v, %v", parts, err)
		}
		if fs := earlyboot.Probe(io.NewSectionReader(f, 1<<20, 8<<20)); fs != (earlyboot.FS{Type: "vfat", Label: "KPAASCONFIG"}) {
			t.Errorf("probe: %+v", fs)
		}
		f.Close()
		b, _ := os.ReadFile(out)
		images = append(images, b)
	}
	if !bytes.Equal(images[0], images[1]) {
		t.Error("two writes of the same files differ")
	}
	if _, err := WriteFATDisk(context.Background(), filepath.Join(dir, "c.img"), "X", "X", map[string]Source{"a/b": FromBytes(nil)}); err == nil || !strings.Contains(err.Error(), "clean absolute") {
		t.Errorf("relative path: %v", err)
	}
	if _, err := WriteFATDisk(context.Background(), filepath.Join(dir, "c.img"), "X", "KPAAS-CONFIG", nil); err == nil {
		t.Error("a 12-character FAT label was accepted")
	}
}
