package image

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"kpaas.dev/appliance/builder/osimage"
	"kpaas.dev/appliance/internal/bundle"
)

var epoch = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

const (
	osRef      = "kpaas.local/os/test:1.0"
	kernelPath = "boot/vmlinuz-6.1.0-test"
)

var (
	kernelBytes = bytes.Repeat([]byte("MZ kernel "), 50_000)
	initrdBytes = bytes.Repeat([]byte("070701 cpio "), 30_000)
	sdbootBytes = bytes.Repeat([]byte("MZ systemd-boot "), 5_000)
)

// fixtureOptions change the test bundle.
type fixtureOptions struct {
	noOS       bool
	kernel     string // the kernel annotation (default kernelPath)
	sign       bool
	annotation map[string]string
	files      []testFile // the file artifacts (default: kubeadm)
}

// testFile is a file artifact of the test bundle; ref is
// kpaas.local/files/NAME:VERSION.
type testFile struct {
	name, version, mode, target, data string
}

func (f testFile) ref() string { return "kpaas.local/files/" + f.name + ":" + f.version }

var kubeadmFile = testFile{name: "kubeadm", version: "v1.30.2", mode: "0755", target: "/usr/bin/kubeadm", data: "#!/bin/kubeadm\n"}

type fixture struct {
	dir     string
	pub     string // public key file when signed
	layers  []v1.Hash
	files   []v1.Hash // the files' blobs, in the order of fixtureOptions.files
	osEntry v1.Descriptor
}

type tarEntry struct {
	typ          byte
	name, data   string
	mode         int64
	major, minor int64
	link         string
}

func makeTar(t testing.TB, comp string, entries []tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w io.Writer = &buf
	var c io.Closer
	switch comp {
	case "gzip":
		z := gzip.NewWriter(&buf)
		w, c = z, z
	case "zstd":
		z, _ := zstd.NewWriter(&buf)
		w, c = z, z
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
		h := &tar.Header{Typeflag: e.typ, Name: e.name, Mode: mode, ModTime: epoch, Linkname: e.link,
			Devmajor: e.major, Devminor: e.minor, Format: tar.FormatPAX}
		if e.typ == tar.TypeReg {
			h.Size = int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		io.WriteString(tw, e.data)
	}
	tw.Close()
	if c != nil {
		c.Close()
	}
	return buf.Bytes()
}

// hostFile is a host file's content for the layer, or "" when missing.
func hostFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

// newFixture writes a bundle with a synthetic OS image (kind os, two
// layers: a base and a node layer with a whiteout and a device node) and
// file artifacts (default: kubeadm, at /usr/bin/kubeadm).
func newFixture(t testing.TB, fo fixtureOptions) *fixture {
	t.Helper()
	d, f, s := byte(tar.TypeDir), byte(tar.TypeReg), byte(tar.TypeSymlink)
	base := []tarEntry{
		{typ: d, name: "./"},
		{typ: d, name: "boot/"},
		{typ: f, name: kernelPath, data: string(kernelBytes)},
		{typ: s, name: "vmlinuz", link: kernelPath, mode: 0o777},
		{typ: d, name: "etc/"},
		{typ: f, name: "etc/os-release", data: "ID=test\n"},
		{typ: f, name: "etc/shadow", mode: 0o640, data: "root:*:\n"},
		{typ: d, name: "usr/"},
		{typ: d, name: "usr/lib/"},
		{typ: f, name: "usr/lib/obsolete", data: "removed by the node layer"},
		{typ: d, name: "usr/lib/systemd/"},
		{typ: d, name: "usr/lib/systemd/boot/"},
		{typ: d, name: "usr/lib/systemd/boot/efi/"},
		{typ: f, name: SystemdBootPath, data: string(sdbootBytes)},
		{typ: d, name: "var/"},
		{typ: d, name: "var/lib/"},
	}
	// the ISO's BIOS boot files, from the image when the host has them
	if iso, mbr, ld := hostFile("/usr/lib/ISOLINUX/isolinux.bin"), hostFile("/usr/lib/ISOLINUX/isohdpfx.bin"),
		hostFile("/usr/lib/syslinux/modules/bios/ldlinux.c32"); iso != "" && mbr != "" && ld != "" {
		base = append(base,
			tarEntry{typ: d, name: "usr/lib/ISOLINUX/"},
			tarEntry{typ: f, name: isolinuxBin, data: iso},
			tarEntry{typ: f, name: isohdpfxBin, data: mbr},
			tarEntry{typ: d, name: "usr/lib/syslinux/"},
			tarEntry{typ: d, name: "usr/lib/syslinux/modules/"},
			tarEntry{typ: d, name: "usr/lib/syslinux/modules/bios/"},
			tarEntry{typ: f, name: ldlinuxC32, data: ld},
		)
	}
	node := []tarEntry{
		{typ: d, name: "boot/kpaas/"},
		{typ: f, name: osimage.InitrdPath, data: string(initrdBytes)},
		{typ: f, name: "usr/lib/.wh.obsolete"},
		{typ: d, name: "usr/bin/"},
		{typ: f, name: osimage.AgentPath, mode: 0o755, data: "agent"},
		{typ: d, name: "dev/"},
		{typ: tar.TypeChar, name: "dev/console", mode: 0o600, major: 5, minor: 1},
	}
	layers := [][]byte{makeTar(t, "gzip", base), makeTar(t, "zstd", node)}

	fx := &fixture{dir: filepath.Join(t.TempDir(), "bundle")}
	store, err := bundle.Create(fx.dir)
	if err != nil {
		t.Fatal(err)
	}
	w := store.NewWriter()
	put := func(b []byte) v1.Descriptor {
		h, n, err := w.WriteBytes(b)
		if err != nil {
			t.Fatal(err)
		}
		return v1.Descriptor{Digest: h, Size: n}
	}
	var entries []v1.Descriptor

	// the host files
	if fo.files == nil {
		fo.files = []testFile{kubeadmFile}
	}
	put(bundle.EmptyJSON)
	for _, f := range fo.files {
		fileLayer := put([]byte(f.data))
		fx.files = append(fx.files, fileLayer.Digest)
		fm, err := bundle.FileManifest(fileLayer, f.name, f.version, f.mode, f.target)
		if err != nil {
			t.Fatal(err)
		}
		fd := put(fm)
		fd.MediaType = types.OCIManifestSchema1
		entries = append(entries, bundle.Annotate(fd, bundle.KindFile, f.ref()))
	}

	if !fo.noOS {
		cfg := put([]byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`))
		cfg.MediaType = types.OCIConfigJSON
		m := v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1, Config: cfg,
			Annotations: map[string]string{
				"org.opencontainers.image.created": epoch.Format(time.RFC3339),
				osimage.AnnotationKernelRelease:    "6.1.0-test",
				osimage.AnnotationKernel:           kernelPath,
				osimage.AnnotationInitrd:           osimage.InitrdPath,
				osimage.AnnotationCmdline:          osimage.DefaultCmdline,
			}}
		if fo.kernel != "" {
			m.Annotations[osimage.AnnotationKernel] = fo.kernel
		}
		for k, v := range fo.annotation {
			m.Annotations[k] = v
		}
		for _, l := range layers {
			ld := put(l)
			ld.MediaType = types.OCILayer
			if l[0] != 0x1f {
				ld.MediaType = types.OCILayerZStd
			}
			m.Layers = append(m.Layers, ld)
			fx.layers = append(fx.layers, ld.Digest)
		}
		raw, err := json.Marshal(&m)
		if err != nil {
			t.Fatal(err)
		}
		md := put(raw)
		md.MediaType = types.OCIManifestSchema1
		md.Platform = &v1.Platform{OS: "linux", Architecture: "amd64"}
		fx.osEntry = bundle.Annotate(md, bundle.KindOS, osRef)
		entries = append(entries, fx.osEntry)
	}
	if err := store.SetEntries(entries); err != nil {
		t.Fatal(err)
	}
	if err := store.WriteSums(); err != nil {
		t.Fatal(err)
	}
	if fo.sign {
		dir := t.TempDir()
		fx.pub = filepath.Join(dir, "k.pub")
		if _, err := bundle.GenerateKey(filepath.Join(dir, "k.key"), fx.pub); err != nil {
			t.Fatal(err)
		}
		priv, err := bundle.LoadPrivateKey(filepath.Join(dir, "k.key"))
		if err != nil {
			t.Fatal(err)
		}
		if err := store.Sign(priv); err != nil {
			t.Fatal(err)
		}
	}
	return fx
}

// outDir is a fresh output folder and prefix.
func outDir(t testing.TB) (dir, out string) {
	dir = t.TempDir()
	return dir, filepath.Join(dir, "node")
}

// listDir names what a folder holds.
func listDir(t testing.TB, dir string) string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return strings.Join(names, " ")
}
