package squashfs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/diskfs/go-diskfs/backend/file"
	dsquash "github.com/diskfs/go-diskfs/filesystem/squashfs"
	"golang.org/x/sys/unix"

	"kpaas.dev/appliance/internal/testenv"
)

var epoch = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// tree makes a tree with every kind of entry this writer handles.
func tree(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "src")
	put := func(p string, data []byte, mode os.FileMode) {
		t.Helper()
		p = filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, mode); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Chmod(p, uint32(mode)); err != nil {
			t.Fatal(err)
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	random := make([]byte, 300_000)
	for i := range random {
		random[i] = byte(r.Uint32())
	}
	put("random.bin", random, 0o644)
	put("text.txt", bytes.Repeat([]byte("squashfs "), 40_000), 0o644)
	put("empty", nil, 0o600)
	put("bin/suid", []byte("#!/bin/sh\n"), 0o4755) // raw mode bits: setuid
	put("exact", bytes.Repeat([]byte{7}, DefaultBlockSize), 0o644)
	// a sparse file: a hole, then one byte
	sparse := filepath.Join(dir, "sparse")
	f, err := os.Create(sparse)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte{1}, 3<<20)
	f.Close()
	for i := range 700 { // several directory headers and metadata blocks
		put(filepath.Join("many", "file-with-a-longish-name-"+strings.Repeat("x", i%40)+string(rune('a'+i%26))+itoa(i)), []byte(itoa(i)), 0o644)
	}
	if err := os.Symlink("text.txt", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(dir, "text.txt"), filepath.Join(dir, "bin/hard")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(dir, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "emptydir"), 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}

func itoa(i int) string {
	return string(rune('0'+i/100%10)) + string(rune('0'+i/10%10)) + string(rune('0'+i%10))
}

func need(t *testing.T, tool string) {
	t.Helper()
	testenv.RequireTool(t, tool)
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

func TestUnsquashfs(t *testing.T) {
	need(t, "unsquashfs")
	src := tree(t)
	for _, c := range []Compression{Zstd, Gzip, None} {
		t.Run(string(c), func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "img.sqfs")
			st, err := WriteFile(context.Background(), img, src, Options{Compression: c, ModTime: epoch, Owner: &Owner{0, 0}})
			if err != nil {
				t.Fatal(err)
			}
			if st.Size%4096 != 0 || st.Files != 706 {
				t.Errorf("stats %+v", st)
			}
			s := run(t, "unsquashfs", "-s", img)
			wantComp := map[Compression]string{Zstd: "Compression zstd", Gzip: "Compression gzip", None: "Data is uncompressed"}[c]
			if !strings.Contains(s, wantComp) || !strings.Contains(s, "Block size 131072") {
				t.Errorf("unsquashfs -s:\n%s", s)
			}
			out := filepath.Join(t.TempDir(), "x")
			run(t, "unsquashfs", "-no-xattrs", "-d", out, img)
			compare(t, src, out)
			ls := run(t, "unsquashfs", "-lls", img)
			if !strings.Contains(ls, "prw-r--r-- root/root") || !strings.Contains(ls, "-rwsr-xr-x root/root") ||
				!strings.Contains(ls, "2026-01-02 03:04 squashfs-root/text.txt") {
				t.Errorf("unsquashfs -lls:\n%.2000s", ls)
			}
		})
	}
}

func compare(t *testing.T, want, got string) {
	t.Helper()
	err := filepath.Walk(want, func(p string, wi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(want, p)
		g := filepath.Join(got, rel)
		gi, err := os.Lstat(g)
		if err != nil {
			t.Errorf("%s: %v", rel, err)
			return nil
		}
		if wi.Mode() != gi.Mode() {
			t.Errorf("%s: mode %v, want %v", rel, gi.Mode(), wi.Mode())
		}
		if wi.Mode().IsRegular() {
			a, _ := os.ReadFile(p)
			b, _ := os.ReadFile(g)
			if !bytes.Equal(a, b) {
				t.Errorf("%s: content differs", rel)
			}
		}
		if wi.Mode()&os.ModeSymlink != 0 {
			a, _ := os.Readlink(p)
			b, _ := os.Readlink(g)
			if a != b {
				t.Errorf("%s: target %q, want %q", rel, b, a)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// hard links stay hard links
	a, _ := os.Stat(filepath.Join(got, "text.txt"))
	b, _ := os.Stat(filepath.Join(got, "bin/hard"))
	if a == nil || b == nil || !os.SameFile(a, b) || a.Sys().(*syscall.Stat_t).Nlink != 2 {
		t.Error("bin/hard is not a hard link of text.txt")
	}
}

// TestGoDiskfsReads cross-checks with an independent reader in-process.
func TestGoDiskfsReads(t *testing.T) {
	src := tree(t)
	img := filepath.Join(t.TempDir(), "img.sqfs")
	st, err := WriteFile(context.Background(), img, src, Options{})
	if err != nil {
		t.Fatal(err)
	}
	fs := readGoDiskfs(t, img, st.Size)
	for _, p := range []string{"random.bin", "text.txt", "sparse", "many/file-with-a-longish-name-a000", "bin/hard"} {
		got, err := fs.ReadFile(p)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		want, _ := os.ReadFile(filepath.Join(src, p))
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs (%d bytes, want %d)", p, len(got), len(want))
		}
	}
}

func TestDeterministic(t *testing.T) {
	src := tree(t)
	digest := func() [32]byte {
		var buf bytes.Buffer
		w := &memWriterAt{b: &buf}
		if _, err := Write(context.Background(), w, src, Options{ModTime: epoch, Workers: 3}); err != nil {
			t.Fatal(err)
		}
		return sha256.Sum256(w.b.Bytes())
	}
	if a, b := digest(), digest(); a != b {
		t.Error("two images of the same tree differ")
	}
}

func TestTooLarge(t *testing.T) {
	src := tree(t)
	_, err := WriteFile(context.Background(), filepath.Join(t.TempDir(), "img"), src, Options{MaxSize: 100_000, Compression: None})
	if !errors.Is(err, ErrTooLarge) {
		t.Errorf("got %v, want ErrTooLarge", err)
	}
	if _, err := Write(context.Background(), &memWriterAt{b: new(bytes.Buffer)}, src, Options{Compression: "xz"}); err == nil {
		t.Error("xz accepted")
	}
	if _, err := Write(context.Background(), &memWriterAt{b: new(bytes.Buffer)}, filepath.Join(src, "text.txt"), Options{}); err == nil {
		t.Error("a file accepted as the tree")
	}
}

type memWriterAt struct{ b *bytes.Buffer }

func (m *memWriterAt) WriteAt(p []byte, off int64) (int, error) {
	if need := int(off) + len(p); need > m.b.Len() {
		m.b.Write(make([]byte, need-m.b.Len()))
	}
	copy(m.b.Bytes()[off:], p)
	return len(p), nil
}

var _ io.WriterAt = (*memWriterAt)(nil)

// readGoDiskfs opens a squashfs image of size bytes with go-diskfs' reader
// (closed when the test ends).
func readGoDiskfs(t *testing.T, img string, size int64) *dsquash.FileSystem {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	fs, err := dsquash.Read(file.New(f, true), size, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	return fs
}
