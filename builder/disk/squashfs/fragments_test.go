package squashfs

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"kpaas.dev/appliance/internal/testenv"
)

// words make compressible text, as most of a root filesystem is.
var words = strings.Fields(`the of and to in is for on that by this with it from as be are at or
	an config file system service user root kernel module package debian linux network path
	value default option error return status start stop enable disable version license copyright`)

// text returns n bytes of pseudo-text from r.
func text(r *rand.Rand, n int) []byte {
	var b bytes.Buffer
	for b.Len() < n {
		b.WriteString(words[r.IntN(len(words))])
		if r.IntN(12) == 0 {
			b.WriteByte('\n')
		} else {
			b.WriteByte(' ')
		}
	}
	return b.Bytes()[:n]
}

// fragTree is tree plus the cases fragments have to get right: files
// around the block size, all-zero tails, tails that fill a fragment
// block, hard links to files with tails, and many small text files.
func fragTree(t *testing.T) string {
	t.Helper()
	dir := tree(t)
	r := rand.New(rand.NewPCG(5, 6))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	bs := DefaultBlockSize
	files := map[string][]byte{
		"frag/exact":          random(bs),
		"frag/plus1":          random(bs + 1),
		"frag/minus1":         random(bs - 1), // a fragment block of its own, almost
		"frag/two-minus1":     random(2*bs - 1),
		"frag/one":            {'x'},
		"frag/empty":          nil,
		"frag/zero-tail":      append(random(bs), make([]byte, 1000)...),
		"frag/zeros-small":    make([]byte, 5000),
		"frag/zeros-plus":     make([]byte, bs+10), // a hole and an all-zero tail
		"frag/zeros-exact":    make([]byte, 2*bs),  // holes only
		"frag/text-tail":      text(r, 3*bs+777),
		"frag/z/last-in-tree": text(r, 100),
	}
	for i := range 600 { // about 10 fragment blocks of text
		files[fmt.Sprintf("frag/small/%02d/f%04d.conf", i%30, i)] = text(r, 1024+r.IntN(2048))
	}
	for p, data := range files {
		p = filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for link, target := range map[string]string{"frag/hard-plus1": "frag/plus1", "frag/small/hard": "frag/small/00/f0000.conf"} {
		if err := os.Link(filepath.Join(dir, target), filepath.Join(dir, link)); err != nil {
			t.Fatal(err)
		}
	}
	for link, target := range map[string]string{"frag/sym": "plus1", "frag/dangling": "nowhere"} {
		if err := os.Symlink(target, filepath.Join(dir, link)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// checkFragHardLinks checks the hard links fragTree adds, in an extracted
// or mounted copy.
func checkFragHardLinks(t *testing.T, got string) {
	t.Helper()
	for link, target := range map[string]string{"frag/hard-plus1": "frag/plus1", "frag/small/hard": "frag/small/00/f0000.conf"} {
		a, _ := os.Stat(filepath.Join(got, link))
		b, _ := os.Stat(filepath.Join(got, target))
		if a == nil || b == nil || !os.SameFile(a, b) {
			t.Errorf("%s is not a hard link of %s", link, target)
		}
	}
}

// checkListing compares `unsquashfs -lls` with the source tree: every
// path, its type and its size.
func checkListing(t *testing.T, img, src string) {
	t.Helper()
	listed := map[string]string{}
	for _, line := range strings.Split(run(t, "unsquashfs", "-lls", img), "\n") {
		i := strings.Index(line, " squashfs-root")
		f := strings.Fields(line)
		if i < 0 || len(f) < 6 {
			continue
		}
		p := strings.TrimPrefix(strings.TrimPrefix(line[i+1:], "squashfs-root"), "/")
		if j := strings.Index(p, " -> "); j >= 0 {
			p = p[:j]
		}
		listed[p] = f[0][:1] + " " + f[2]
	}
	n := 0
	err := filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if rel == "." {
			rel = ""
		}
		n++
		want := "-"
		switch m := fi.Mode(); {
		case m.IsDir():
			want = "d"
		case m&os.ModeSymlink != 0:
			want = "l"
		case m&os.ModeNamedPipe != 0:
			want = "p"
		}
		got := listed[rel]
		if want == "d" {
			got, _, _ = strings.Cut(got, " ") // a folder's size is the writer's
		} else {
			want += " " + strconv.FormatInt(fi.Size(), 10)
		}
		if got != want {
			t.Errorf("unsquashfs -lls %q: %q, want %q", rel, got, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(listed) != n {
		t.Errorf("unsquashfs -lls lists %d entries, the tree has %d", len(listed), n)
	}
}

func TestFragmentsUnsquashfs(t *testing.T) {
	need(t, "unsquashfs")
	src := fragTree(t)
	for _, c := range []Compression{Zstd, Gzip, None} {
		t.Run(string(c), func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "img.sqfs")
			st, err := WriteFile(context.Background(), img, src, Options{Compression: c, ModTime: epoch, Owner: &Owner{0, 0}})
			if err != nil {
				t.Fatal(err)
			}
			if st.Fragments < 10 {
				t.Errorf("%d fragment blocks, want 10 or more", st.Fragments)
			}
			s := run(t, "unsquashfs", "-s", img)
			if !strings.Contains(s, fmt.Sprintf("Number of fragments %d\n", st.Fragments)) ||
				!strings.Contains(s, "Always-use-fragments option is specified") {
				t.Errorf("unsquashfs -s:\n%s", s)
			}
			if c == None && !strings.Contains(s, "Fragments are uncompressed") {
				t.Errorf("unsquashfs -s:\n%s", s)
			}
			checkListing(t, img, src)
			out := filepath.Join(t.TempDir(), "x")
			run(t, "unsquashfs", "-no-xattrs", "-d", out, img)
			compare(t, src, out)
			checkFragHardLinks(t, out)
		})
	}
}

func TestNoFragments(t *testing.T) {
	need(t, "unsquashfs")
	src := fragTree(t)
	img := filepath.Join(t.TempDir(), "img.sqfs")
	st, err := WriteFile(context.Background(), img, src, Options{ModTime: epoch, NoFragments: true})
	if err != nil {
		t.Fatal(err)
	}
	if st.Fragments != 0 {
		t.Errorf("%d fragment blocks with NoFragments", st.Fragments)
	}
	s := run(t, "unsquashfs", "-s", img)
	if !strings.Contains(s, "Number of fragments 0\n") || !strings.Contains(s, "Fragments are not stored") {
		t.Errorf("unsquashfs -s:\n%s", s)
	}
	out := filepath.Join(t.TempDir(), "x")
	run(t, "unsquashfs", "-no-xattrs", "-d", out, img)
	compare(t, src, out)
}

// TestFragmentsGoDiskfs reads every file back with go-diskfs' reader.
func TestFragmentsGoDiskfs(t *testing.T) {
	src := fragTree(t)
	for _, c := range []Compression{Zstd, None} {
		t.Run(string(c), func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "img.sqfs")
			st, err := WriteFile(context.Background(), img, src, Options{Compression: c})
			if err != nil {
				t.Fatal(err)
			}
			fs := readGoDiskfs(t, img, st.Size)
			n := 0
			err = filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
				rel, _ := filepath.Rel(src, p)
				if rel == "many" { // go-diskfs reads a folder's inodes per lookup: slow, and TestGoDiskfsReads has it
					return filepath.SkipDir
				}
				if err != nil || !fi.Mode().IsRegular() {
					return err
				}
				got, err := fs.ReadFile(filepath.ToSlash(rel))
				if err != nil {
					t.Errorf("%s: %v", rel, err)
					return nil
				}
				want, _ := os.ReadFile(p)
				if !bytes.Equal(got, want) {
					t.Errorf("%s differs (%d bytes, want %d)", rel, len(got), len(want))
				}
				n++
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if n < 600 {
				t.Errorf("read %d files", n)
			}
		})
	}
}

// TestFragmentsDeterministic: the bytes do not depend on the number of
// workers nor on GOMAXPROCS, for the folder and the layers writer.
func TestFragmentsDeterministic(t *testing.T) {
	src := fragTree(t)
	tree := readTree(t, []Layer{bytesLayer(tarOf(t, src))})
	image := func(workers int, fromTree bool) [32]byte {
		w := &memWriterAt{b: new(bytes.Buffer)}
		opts := Options{ModTime: epoch, Workers: workers, Owner: &Owner{}}
		var err error
		if fromTree {
			_, err = tree.Write(context.Background(), w, opts)
		} else {
			_, err = Write(context.Background(), w, src, opts)
		}
		if err != nil {
			t.Fatal(err)
		}
		return sha256.Sum256(w.b.Bytes())
	}
	want := image(1, false)
	for _, workers := range []int{2, 5, 16} {
		if image(workers, false) != want {
			t.Errorf("folder, %d workers: the image differs from 1 worker's", workers)
		}
		if image(workers, true) != want {
			t.Errorf("layers, %d workers: the image differs from the folder's", workers)
		}
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	if image(0, false) != want {
		t.Error("GOMAXPROCS=1: the image differs")
	}
}

// TestLayersFragmentsSameAsFolder: with and without fragments, the layers
// writer gives the folder writer's bytes for the same tree.
func TestLayersFragmentsSameAsFolder(t *testing.T) {
	src := fragTree(t)
	tree := readTree(t, []Layer{bytesLayer(tarOf(t, src))})
	for _, noFrag := range []bool{false, true} {
		opts := Options{ModTime: epoch, Owner: &Owner{}, NoFragments: noFrag}
		fromDir := &memWriterAt{b: new(bytes.Buffer)}
		if _, err := Write(context.Background(), fromDir, src, opts); err != nil {
			t.Fatal(err)
		}
		fromTar := &memWriterAt{b: new(bytes.Buffer)}
		if _, err := tree.Write(context.Background(), fromTar, opts); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(fromDir.b.Bytes(), fromTar.b.Bytes()) {
			t.Errorf("NoFragments %v: images differ: folder %d bytes, layers %d bytes", noFrag, fromDir.b.Len(), fromTar.b.Len())
		}
	}
}

// tarOf makes a plain tar of the folder, hard links as tar links.
func tarOf(t *testing.T, src string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	seen := map[uint64]string{}
	err := filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		link, _ := os.Readlink(p)
		hdr, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		if st := fi.Sys().(*syscall.Stat_t); fi.Mode().IsRegular() && st.Nlink > 1 {
			if first, ok := seen[st.Ino]; ok {
				hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
			} else {
				seen[st.Ino] = hdr.Name
			}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if hdr.Typeflag == tar.TypeReg {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if _, err := tw.Write(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		err = tw.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestFragmentsSmaller: for a tree of small text files, as most of a root
// filesystem is, fragments make the image much smaller. Compared with
// mksquashfs at the same zstd level when it is installed.
func TestFragmentsSmaller(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	r := rand.New(rand.NewPCG(7, 8))
	for i := range 4000 {
		p := filepath.Join(src, fmt.Sprintf("d%02d", i%50), fmt.Sprintf("f%04d", i))
		if i < 50 { // the first file of each folder
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(p, text(r, 1024+r.IntN(2048)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	size := func(noFrag bool) int64 {
		st, err := Write(context.Background(), &memWriterAt{b: new(bytes.Buffer)}, src, Options{ModTime: epoch, NoFragments: noFrag})
		if err != nil {
			t.Fatal(err)
		}
		return st.Size
	}
	with, without := size(false), size(true)
	t.Logf("4000 files of 1-3 KiB: %d bytes with fragments, %d without (%.0f%%)", with, without, 100*float64(with)/float64(without))
	if with >= without*8/10 {
		t.Errorf("with fragments %d bytes, not under 80%% of %d without", with, without)
	}
	if _, err := exec.LookPath("mksquashfs"); err != nil {
		t.Logf("mksquashfs not installed: no comparison")
		return
	}
	img := filepath.Join(t.TempDir(), "mk.sqfs")
	run(t, "mksquashfs", src, img, "-comp", "zstd", "-Xcompression-level", "3", "-b", "131072",
		"-noappend", "-no-xattrs", "-quiet", "-no-progress")
	fi, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("mksquashfs -comp zstd -Xcompression-level 3 -b 131072: %d bytes (ours %.1f%% of it)", fi.Size(), 100*float64(with)/float64(fi.Size()))
}

// mount loop-mounts img read-only at a new folder, unmounted at the end
// of the test.
func mount(t *testing.T, img string) (string, error) {
	t.Helper()
	mnt := t.TempDir()
	out, err := exec.Command("mount", "-t", "squashfs", "-o", "loop,ro", img, mnt).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("mount %s: %w: %s", img, err, bytes.TrimSpace(out))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
		}
	})
	return mnt, nil
}

// TestFragmentsKernelMount mounts fragment images with the kernel, the
// reader that matters most, and compares them with the source. It is
// skipped when not root, or when mounting fails for a reason other than
// the image: then a control image (mksquashfs's, or ours without
// fragments) does not mount either (in CI, as root, that fails instead).
func TestFragmentsKernelMount(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("not root: no loop mount")
	}
	testenv.RequireTool(t, "mount")
	src := fragTree(t)
	for _, c := range []Compression{Zstd, None} {
		t.Run(string(c), func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "img.sqfs")
			if _, err := WriteFile(context.Background(), img, src, Options{Compression: c, ModTime: epoch}); err != nil {
				t.Fatal(err)
			}
			mnt, err := mount(t, img)
			if err != nil {
				control := filepath.Join(t.TempDir(), "control.sqfs")
				if _, lerr := exec.LookPath("mksquashfs"); lerr == nil {
					run(t, "mksquashfs", src, control, "-comp", "zstd", "-noappend", "-quiet", "-no-progress")
				} else if _, err := WriteFile(context.Background(), control, src, Options{Compression: c, NoFragments: true}); err != nil {
					t.Fatal(err)
				}
				if _, cerr := mount(t, control); cerr != nil {
					testenv.SkipOrFailf(t, "loop mounts do not work here: %v", cerr)
				}
				t.Fatalf("the kernel refuses the image (a control image mounts): %v", err)
			}
			compare(t, src, mnt)
			checkFragHardLinks(t, mnt)
		})
	}
}
