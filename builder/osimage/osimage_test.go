package osimage

import (
	"archive/tar"
	"compress/gzip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"kpaas.dev/appliance/images"
)

// A layer of the same tree is the same bytes, whatever the files' times;
// times are the epoch, device nodes are left out, hard links become copies.
func TestLayerDeterministic(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"etc", "dev", "usr/bin"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	os.WriteFile(filepath.Join(root, "etc/hostname"), []byte("kpaas-node\n"), 0o644)
	os.WriteFile(filepath.Join(root, "usr/bin/tool"), []byte("#!/bin/sh\n"), 0o4755)
	os.Link(filepath.Join(root, "usr/bin/tool"), filepath.Join(root, "usr/bin/tool2"))
	os.Symlink("usr/bin", filepath.Join(root, "bin"))
	if os.Geteuid() == 0 {
		if err := syscall.Mknod(filepath.Join(root, "dev/null"), syscall.S_IFCHR|0o666, 1<<8|3); err != nil {
			t.Fatal(err)
		}
	}
	write := func(name string) Layer {
		l, err := writeLayer(filepath.Join(t.TempDir(), name), func(tw *tarWriter) error { return tw.addTree(root) }, 1700000000)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	a := write("a.tar.gz")
	later := time.Now().Add(time.Hour)
	os.Chtimes(filepath.Join(root, "etc/hostname"), later, later)
	b := write("b.tar.gz")
	if a.Digest != b.Digest || a.DiffID != b.DiffID {
		t.Fatalf("layers differ: %+v %+v", a, b)
	}
}

func TestLayerContent(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "dev/pts"), 0o755)
	os.MkdirAll(filepath.Join(root, "usr/bin"), 0o755)
	os.WriteFile(filepath.Join(root, "usr/bin/tool"), []byte("x"), 0o4755)
	os.Link(filepath.Join(root, "usr/bin/tool"), filepath.Join(root, "usr/bin/tool2"))
	os.Symlink("usr/bin", filepath.Join(root, "bin"))
	path := filepath.Join(t.TempDir(), "l.tar.gz")
	if _, err := writeLayer(path, func(tw *tarWriter) error { return tw.addTree(root) }, 1700000000); err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open(path)
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var got []string
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		if !h.ModTime.Equal(time.Unix(1700000000, 0)) || h.Uname != "" {
			t.Errorf("%s: mtime %v uname %q", h.Name, h.ModTime, h.Uname)
		}
		got = append(got, string(h.Typeflag)+" "+h.Name+" "+h.Linkname)
	}
	want := "2 bin usr/bin|5 dev/ |5 usr/ |5 usr/bin/ |0 usr/bin/tool |0 usr/bin/tool2 "
	if strings.Join(got, "|") != want {
		t.Errorf("entries %q\nwant    %q", strings.Join(got, "|"), want)
	}
}

func TestMmdebstrapArgs(t *testing.T) {
	def, err := images.Get(images.Default)
	if err != nil {
		t.Fatal(err)
	}
	args := strings.Join(mmdebstrapArgs(def, "/target"), "\n")
	for _, want := range []string{"--variant=minbase", "--include=linux-image-amd64,systemd-sysv,", "bookworm\n/target\nhttp://deb.debian.org/debian\n", "\ndeb http://deb.debian.org/debian-security bookworm-security main"} {
		if !strings.Contains(args, want) {
			t.Errorf("mmdebstrap args lack %q:\n%s", want, args)
		}
	}
	if k1, k2 := cacheKey(def, 0), cacheKey(def, 1); k1 == k2 {
		t.Error("the epoch does not change the cache key")
	}
}

func TestHasPVHNote(t *testing.T) {
	if HasPVHNote([]byte("not an elf")) {
		t.Error("garbage has a PVH note")
	}
	self, err := os.ReadFile("/proc/self/exe")
	if err == nil && HasPVHNote(self) {
		t.Error("the test binary has a PVH note")
	}
	if _, err := Vmlinux([]byte("no payload")); err == nil {
		t.Error("Vmlinux of garbage succeeded")
	}
}
