package squashfs

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// entry is one tar header of a test layer; data is a regular file's content.
type entry struct {
	typ      byte
	name     string
	mode     int64
	uid, gid int
	data     string
	link     string
	major    int64
	minor    int64
}

// layerTar makes a tar stream, compressed with comp ("gzip", "zstd" or "").
func layerTar(t testing.TB, comp string, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w io.Writer = &buf
	var closer io.Closer
	switch comp {
	case "gzip":
		z := gzip.NewWriter(&buf)
		w, closer = z, z
	case "zstd":
		z, err := zstd.NewWriter(&buf)
		if err != nil {
			t.Fatal(err)
		}
		w, closer = z, z
	}
	tw := tar.NewWriter(w)
	for _, e := range entries {
		mode := e.mode
		if mode == 0 {
			mode = 0o644
			if e.typ == tar.TypeDir {
				mode = 0o755
			}
		}
		hdr := &tar.Header{Typeflag: e.typ, Name: e.name, Mode: mode, Uid: e.uid, Gid: e.gid,
			Linkname: e.link, Devmajor: e.major, Devminor: e.minor, ModTime: epoch, Format: tar.FormatPAX}
		if e.typ == tar.TypeReg {
			hdr.Size = int64(len(e.data))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if closer != nil {
		if err := closer.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

func bytesLayer(b []byte) Layer {
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
}

func randomString(n int) string {
	r := rand.New(rand.NewPCG(3, 4))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return string(b)
}

// testLayers: a base, a layer with whiteouts and an opaque folder, and a
// plain tar that deletes the first name of a hard link.
func testLayers(t testing.TB) []Layer {
	d, f, l, s := byte(tar.TypeDir), byte(tar.TypeReg), byte(tar.TypeLink), byte(tar.TypeSymlink)
	big := randomString(300_000)
	base := layerTar(t, "gzip",
		entry{typ: d, name: "./"},
		entry{typ: d, name: "bin/"},
		entry{typ: f, name: "bin/sh", mode: 0o755, data: "#!shell"},
		entry{typ: f, name: "bin/su", mode: 0o4755, data: "setuid"},
		entry{typ: d, name: "etc/"},
		entry{typ: f, name: "etc/passwd", data: "root:x:0:0"},
		entry{typ: f, name: "etc/shadow", mode: 0o640, gid: 42, data: "root:*"},
		entry{typ: l, name: "etc/hard", link: "etc/passwd"},
		entry{typ: f, name: "etc/replaced", data: "old"},
		entry{typ: d, name: "usr/"},
		entry{typ: d, name: "usr/lib/"},
		entry{typ: f, name: "usr/lib/gone.txt", data: "whited out"},
		entry{typ: f, name: "usr/lib/big", data: big},
		entry{typ: f, name: "usr/lib/zeros", data: strings.Repeat("\x00", 256<<10)},
		entry{typ: s, name: "lib", link: "usr/lib", mode: 0o777},
		entry{typ: d, name: "opt/"},
		entry{typ: f, name: "opt/old", data: "hidden by the opaque marker"},
		entry{typ: d, name: "opt/sub/"},
		entry{typ: f, name: "opt/sub/deep", data: "hidden too"},
		entry{typ: d, name: "dev/"},
		entry{typ: tar.TypeChar, name: "dev/null", mode: 0o666, major: 1, minor: 3},
		entry{typ: tar.TypeBlock, name: "dev/sda", mode: 0o660, gid: 6, major: 8, minor: 0},
		// minors above 255 are encoded as the kernel decodes them (new_decode_dev),
		// but unsquashfs 4.5 lists them wrongly, so none here
		entry{typ: tar.TypeChar, name: "dev/big-major", mode: 0o600, major: 250, minor: 200},
		entry{typ: tar.TypeFifo, name: "dev/initctl", mode: 0o600},
		entry{typ: d, name: "home/"},
		entry{typ: d, name: "home/user/", mode: 0o700, uid: 1000, gid: 1000},
		entry{typ: f, name: "home/user/notes", mode: 0o600, uid: 1000, gid: 1000, data: "mine"},
		entry{typ: d, name: "gone/"},
		entry{typ: f, name: "gone/file", data: "the folder is whited out"},
	)
	node := layerTar(t, "zstd",
		entry{typ: f, name: "usr/lib/.wh.gone.txt"},
		entry{typ: f, name: ".wh.gone"},
		entry{typ: f, name: "opt/new", data: "layer 2"},
		entry{typ: f, name: "opt/.wh..wh..opq"}, // after an entry of its own layer: that entry stays
		entry{typ: d, name: "opt/sub/", mode: 0o750},
		entry{typ: f, name: "opt/sub/fresh", data: "layer 2"},
		entry{typ: f, name: "etc/replaced", mode: 0o600, data: "new"},
		entry{typ: l, name: "etc/hard2", link: "etc/passwd"}, // a link to a lower layer's file
		entry{typ: f, name: "usr/bin/tool", mode: 0o755, data: "implicit parent"},
		entry{typ: tar.TypeChar, name: "dev/tty", mode: 0o666, gid: 5, major: 5, minor: 0},
		entry{typ: d, name: "home/user/", mode: 0o750, uid: 1000, gid: 100}, // folder declared again
	)
	last := layerTar(t, "",
		entry{typ: f, name: "etc/.wh.passwd"}, // the links keep the content
		entry{typ: d, name: "boot/"},
		entry{typ: s, name: "boot/vmlinuz", link: "vmlinuz-6.1", mode: 0o777},
		entry{typ: f, name: "boot/vmlinuz-6.1", data: "kernel"},
	)
	return []Layer{bytesLayer(base), bytesLayer(node), bytesLayer(last)}
}

func readTree(t *testing.T, layers []Layer) *Tree {
	t.Helper()
	tree, err := ReadLayers(context.Background(), layers, LayerOptions{TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tree.Close() })
	return tree
}

var devNumbers = regexp.MustCompile(`(\d+),\s*(\d+?)\s*\d{4}-\d\d-\d\d `)

// longListing runs unsquashfs -lln and returns "mode uid/gid" (plus the link
// target or device numbers) by path.
func longListing(t *testing.T, img string) map[string]string {
	t.Helper()
	out := run(t, "unsquashfs", "-lln", img)
	got := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || !strings.HasPrefix(f[len(f)-1], "squashfs-root") && !strings.Contains(line, "squashfs-root") {
			continue
		}
		i := strings.Index(line, "squashfs-root")
		p := strings.TrimPrefix(strings.TrimPrefix(line[i:], "squashfs-root"), "/")
		desc := f[0] + " " + f[1]
		if m := devNumbers.FindStringSubmatch(line); m != nil && (f[0][0] == 'c' || f[0][0] == 'b') {
			desc += " " + m[1] + "," + m[2] // unsquashfs may glue the minor to the date
		}
		if target, ok := strings.CutPrefix(p[strings.Index(p, " ")+1:], "-> "); ok && strings.Contains(p, " -> ") {
			p = p[:strings.Index(p, " -> ")]
			desc += " -> " + target
		}
		got[p] = desc
	}
	return got
}

func TestLayersUnsquashfs(t *testing.T) {
	need(t, "unsquashfs")
	tree := readTree(t, testLayers(t))
	img := filepath.Join(t.TempDir(), "root.sqfs")
	st, err := tree.WriteFile(context.Background(), img, Options{ModTime: epoch})
	if err != nil {
		t.Fatal(err)
	}
	ls := longListing(t, img)
	want := map[string]string{
		"":                "drwxr-xr-x 0/0",
		"bin/su":          "-rwsr-xr-x 0/0",
		"etc/shadow":      "-rw-r----- 0/42",
		"etc/hard":        "-rw-r--r-- 0/0",
		"etc/hard2":       "-rw-r--r-- 0/0",
		"etc/replaced":    "-rw------- 0/0",
		"lib":             "lrwxrwxrwx 0/0 -> usr/lib",
		"dev/null":        "crw-rw-rw- 0/0 1,3",
		"dev/sda":         "brw-rw---- 0/6 8,0",
		"dev/big-major":   "crw------- 0/0 250,200",
		"dev/tty":         "crw-rw-rw- 0/5 5,0",
		"dev/initctl":     "prw------- 0/0",
		"home/user":       "drwxr-x--- 1000/100",
		"home/user/notes": "-rw------- 1000/1000",
		"opt/new":         "-rw-r--r-- 0/0",
		"opt/sub":         "drwxr-x--- 0/0",
		"opt/sub/fresh":   "-rw-r--r-- 0/0",
		"usr/bin":         "drwxr-xr-x 0/0",
		"usr/bin/tool":    "-rwxr-xr-x 0/0",
		"boot/vmlinuz":    "lrwxrwxrwx 0/0 -> vmlinuz-6.1",
	}
	for p, w := range want {
		if ls[p] != w {
			t.Errorf("%s: %q, want %q", p, ls[p], w)
		}
	}
	for _, p := range []string{"usr/lib/gone.txt", "gone", "gone/file", "opt/old", "opt/sub/deep", "etc/passwd"} {
		if _, ok := ls[p]; ok {
			t.Errorf("%s is in the image; it was whited out", p)
		}
	}
	if st.Files != 12 {
		t.Errorf("%d files, want 12 (hard links once): %+v", st.Files, st)
	}

	out := filepath.Join(t.TempDir(), "x")
	run(t, "unsquashfs", "-no-xattrs", "-d", out, img, "etc", "usr", "opt", "boot")
	contents := map[string]string{
		"etc/hard": "root:x:0:0", "etc/hard2": "root:x:0:0", "etc/replaced": "new",
		"usr/lib/big": randomString(300_000), "usr/lib/zeros": strings.Repeat("\x00", 256<<10),
		"opt/new": "layer 2", "usr/bin/tool": "implicit parent", "boot/vmlinuz": "kernel",
	}
	for p, w := range contents {
		b, err := os.ReadFile(filepath.Join(out, p))
		if err != nil || string(b) != w {
			t.Errorf("%s: %d bytes (%v), want %d", p, len(b), err, len(w))
		}
	}
	a, _ := os.Stat(filepath.Join(out, "etc/hard"))
	b, _ := os.Stat(filepath.Join(out, "etc/hard2"))
	if a == nil || b == nil || !os.SameFile(a, b) {
		t.Error("etc/hard and etc/hard2 are not one file")
	}
}

func TestLayersOpen(t *testing.T) {
	tree := readTree(t, testLayers(t))
	for p, want := range map[string]string{
		"boot/vmlinuz":        "kernel", // a symlink, followed
		"/lib/big":            randomString(300_000),
		"etc/hard":            "root:x:0:0",
		"usr/../etc/replaced": "new",
	} {
		r, err := tree.Open(p)
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		got, _ := io.ReadAll(r)
		if string(got) != want {
			t.Errorf("%s: %d bytes, want %d", p, len(got), len(want))
		}
	}
	for _, p := range []string{"etc/passwd", "usr/lib/gone.txt", "etc", "dev/null", "nope/x"} {
		if _, err := tree.Open(p); err == nil {
			t.Errorf("%s opened", p)
		}
	}
}

func TestLayersDeterministic(t *testing.T) {
	digest := func() [32]byte {
		tree := readTree(t, testLayers(t))
		w := &memWriterAt{b: new(bytes.Buffer)}
		if _, err := tree.Write(context.Background(), w, Options{ModTime: epoch, Workers: 3}); err != nil {
			t.Fatal(err)
		}
		return sha256.Sum256(w.b.Bytes())
	}
	if a, b := digest(), digest(); a != b {
		t.Error("two images of the same layers differ")
	}
}

// TestLayersSameAsFolder: a layer made from a folder gives the image the
// folder writer makes of that folder.
func TestLayersSameAsFolder(t *testing.T) {
	src := t.TempDir()
	put := func(p, data string, mode os.FileMode) {
		p = filepath.Join(src, p)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(data), mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, mode)
		os.Chtimes(p, epoch, epoch)
	}
	put("a/b/c", "hello", 0o644)
	put("a/x", strings.Repeat("y", 200_000), 0o755)
	put("z", "", 0o600)
	os.Link(filepath.Join(src, "a/b/c"), filepath.Join(src, "hl"))
	os.Symlink("a/x", filepath.Join(src, "s"))
	for _, d := range []string{"a", "a/b", "."} {
		os.Chtimes(filepath.Join(src, d), epoch, epoch)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		rel, _ := filepath.Rel(src, p)
		link, _ := os.Readlink(p)
		hdr, _ := tar.FileInfoHeader(fi, link)
		hdr.Name = rel
		if rel == "hl" {
			hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, "a/b/c", 0
		}
		tw.WriteHeader(hdr)
		if hdr.Typeflag == tar.TypeReg {
			b, _ := os.ReadFile(p)
			tw.Write(b)
		}
		return nil
	})
	tw.Close()
	opts := Options{ModTime: epoch, Owner: &Owner{}}
	fromDir := &memWriterAt{b: new(bytes.Buffer)}
	if _, err := Write(context.Background(), fromDir, src, opts); err != nil {
		t.Fatal(err)
	}
	tree := readTree(t, []Layer{bytesLayer(buf.Bytes())})
	fromTar := &memWriterAt{b: new(bytes.Buffer)}
	if _, err := tree.Write(context.Background(), fromTar, opts); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(fromDir.b.Bytes(), fromTar.b.Bytes()) {
		t.Errorf("images differ: folder %d bytes, layers %d bytes", fromDir.b.Len(), fromTar.b.Len())
	}
}

func TestLayersBadInput(t *testing.T) {
	f := byte(tar.TypeReg)
	cases := map[string][]byte{
		"hard link to missing": layerTar(t, "gzip", entry{typ: tar.TypeLink, name: "a", link: "nope"}),
		"truncated gzip":       layerTar(t, "gzip", entry{typ: f, name: "a", data: randomString(100_000)})[:5000],
	}
	for name, b := range cases {
		if _, err := ReadLayers(context.Background(), []Layer{bytesLayer(b)}, LayerOptions{TempDir: t.TempDir()}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// a reader that fails at its end (as a verifying reader does)
	bad := func() (io.ReadCloser, error) {
		b := layerTar(t, "gzip", entry{typ: f, name: "a", data: "x"})
		return io.NopCloser(io.MultiReader(bytes.NewReader(b), errReader{})), nil
	}
	if _, err := ReadLayers(context.Background(), []Layer{bad}, LayerOptions{TempDir: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "digest") {
		t.Errorf("an error at the end of the stream: %v", err)
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("digest mismatch") }

func TestExclude(t *testing.T) {
	need(t, "unsquashfs")
	src := tree(t)
	img := filepath.Join(t.TempDir(), "img.sqfs")
	skip := map[string]bool{"many": true, "bin/suid": true}
	st, err := WriteFile(context.Background(), img, src, Options{Exclude: func(rel string) bool { return skip[rel] }})
	if err != nil {
		t.Fatal(err)
	}
	ls := run(t, "unsquashfs", "-l", img)
	if strings.Contains(ls, "many") || strings.Contains(ls, "suid") || !strings.Contains(ls, "squashfs-root/bin/hard") {
		t.Errorf("unsquashfs -l:\n%.1000s", ls)
	}
	if st.Files != 5 {
		t.Errorf("%d files, want 5", st.Files)
	}
}

// TestAddFile: files added over the layers, as the image build adds the
// bundle's node files.
func TestAddFile(t *testing.T) {
	need(t, "unsquashfs")
	tree := readTree(t, testLayers(t))
	mtime := epoch.Add(-time.Hour)
	add := func(name string, mode int64, uid int, data string) error {
		return tree.AddFile(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Uid: uid, Gid: uid,
			Size: int64(len(data)), ModTime: mtime}, strings.NewReader(data))
	}
	big := randomString(200_000)
	for _, f := range []struct {
		name string
		mode int64
		uid  int
		data string
	}{
		{"/usr/local/bin/kubelet", 0o755, 0, big},                    // parents made
		{"/etc/replaced", 0o600, 0, "from the bundle"},               // replaces a lower file
		{"boot/vmlinuz", 0o644, 0, "not a symlink any more"},         // replaces a symlink
		{"/lib/modules-load.d/k8s.conf", 0o644, 0, "br_netfilter\n"}, // through the symlink lib -> usr/lib
		{"/home/user/owned", 0o4750, 1000, "setuid, uid 1000"},
	} {
		if err := add(f.name, f.mode, f.uid, f.data); err != nil {
			t.Fatalf("%s: %v", f.name, err)
		}
	}
	// refused, and the tree stays as it was
	for name, want := range map[string]string{
		"/usr/bin":            "would replace the folder /usr/bin",
		"/lib":                "would replace /lib, a symlink to a folder",
		"/bin/sh/x":           "/bin/sh is not a folder",
		"/new/dir/.wh.passwd": "whiteouts",
		"/":                   "no name",
	} {
		if err := add(name, 0o644, 0, "x"); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want %q in it", name, err, want)
		}
	}
	if err := tree.AddFile(&tar.Header{Name: "/new/short", Mode: 0o644, Size: 10}, strings.NewReader("5 byt")); err == nil {
		t.Error("a short content was accepted")
	}
	if err := tree.AddFile(&tar.Header{Name: "/new/bad", Mode: 0o644, Size: 1}, io.MultiReader(strings.NewReader("x"), errReader{})); err == nil || !strings.Contains(err.Error(), "digest") {
		t.Errorf("a failing reader: %v", err)
	}
	if err := tree.AddFile(&tar.Header{Typeflag: tar.TypeSymlink, Name: "/new/link", Linkname: "x"}, strings.NewReader("")); err == nil {
		t.Error("a symlink was added")
	}

	img := filepath.Join(t.TempDir(), "root.sqfs")
	if _, err := tree.WriteFile(context.Background(), img, Options{ModTime: epoch}); err != nil {
		t.Fatal(err)
	}
	ls := longListing(t, img)
	for p, w := range map[string]string{
		"usr/local":                       "drwxr-xr-x 0/0",
		"usr/local/bin":                   "drwxr-xr-x 0/0",
		"usr/local/bin/kubelet":           "-rwxr-xr-x 0/0",
		"etc/replaced":                    "-rw------- 0/0",
		"etc/hard":                        "-rw-r--r-- 0/0", // the other files untouched
		"boot/vmlinuz":                    "-rw-r--r-- 0/0",
		"lib":                             "lrwxrwxrwx 0/0 -> usr/lib",
		"usr/lib/modules-load.d/k8s.conf": "-rw-r--r-- 0/0",
		"home/user/owned":                 "-rwsr-x--- 1000/1000",
		"bin/sh":                          "-rwxr-xr-x 0/0",
	} {
		if ls[p] != w {
			t.Errorf("%s: %q, want %q", p, ls[p], w)
		}
	}
	for p := range ls {
		if strings.HasPrefix(p, "new") {
			t.Errorf("%s is in the image; only failed adds named it", p)
		}
	}

	out := filepath.Join(t.TempDir(), "x")
	run(t, "unsquashfs", "-no-xattrs", "-d", out, img, "etc", "usr", "boot")
	for p, w := range map[string]string{
		"usr/local/bin/kubelet": big, "etc/replaced": "from the bundle", "boot/vmlinuz": "not a symlink any more",
		"usr/lib/modules-load.d/k8s.conf": "br_netfilter\n", "usr/lib/big": randomString(300_000), "etc/hard": "root:x:0:0",
	} {
		b, err := os.ReadFile(filepath.Join(out, p))
		if err != nil || string(b) != w {
			t.Errorf("%s: %d bytes (%v), want %d", p, len(b), err, len(w))
		}
	}
	for _, p := range []string{"usr/local/bin/kubelet", "usr/local/bin"} {
		if fi, err := os.Stat(filepath.Join(out, p)); err != nil || !fi.ModTime().Equal(mtime) {
			t.Errorf("%s: mtime %v (%v), want %v", p, fi.ModTime(), err, mtime)
		}
	}
	if r, err := tree.Open("/lib/modules-load.d/k8s.conf"); err != nil || r.Size() != int64(len("br_netfilter\n")) {
		t.Errorf("Open of an added file: %v", err)
	}
}
