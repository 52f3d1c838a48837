package disk

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"kpaas.dev/appliance/internal/atomicfile"
	"kpaas.dev/appliance/internal/testenv"
)

// need skips the test when a host tool is missing (CI installs them:
// fdisk, dosfstools, mtools, squashfs-tools, qemu-utils, xorriso,
// isolinux, syslinux-common, syslinux).
func need(t *testing.T, tools ...string) {
	t.Helper()
	testenv.RequireTools(t, tools...)
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1", "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func writeFile(t *testing.T, p string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

var fixedTime = time.Date(2026, 1, 2, 3, 4, 6, 0, time.UTC)

// fixture makes a small synthetic payload: fake kernel, initrd and boot
// loader, a root tree and an OCI-layout-shaped bundle. All mtimes are fixed,
// so two fixtures are the same input.
func fixture(t *testing.T) Layout {
	t.Helper()
	dir := t.TempDir()
	in := filepath.Join(dir, "in")
	writeFile(t, filepath.Join(in, "vmlinuz"), randomBytes(1, 300<<10))
	writeFile(t, filepath.Join(in, "initrd.img"), randomBytes(2, 200<<10))
	writeFile(t, filepath.Join(in, "BOOTX64.EFI"), append([]byte("MZ"), randomBytes(3, 50<<10)...))

	root := filepath.Join(dir, "root")
	writeFile(t, filepath.Join(root, "etc/os-release"), []byte("ID=debian\nVERSION_ID=12\n"))
	writeFile(t, filepath.Join(root, "usr/bin/tool"), bytes.Repeat([]byte("executable "), 30000))
	writeFile(t, filepath.Join(root, "usr/lib/blob"), randomBytes(4, 150<<10))
	if err := os.Symlink("usr/bin", filepath.Join(root, "bin")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(root, "usr/bin/tool"), 0o755); err != nil {
		t.Fatal(err)
	}

	bundle := filepath.Join(dir, "bundle")
	writeFile(t, filepath.Join(bundle, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`))
	writeFile(t, filepath.Join(bundle, "index.json"), []byte(`{"schemaVersion":2,"manifests":[]}`))
	for i := range 3 {
		b := randomBytes(uint64(10+i), 400<<10)
		sum := sha256.Sum256(b)
		writeFile(t, filepath.Join(bundle, "blobs/sha256", hex.EncodeToString(sum[:])), b)
	}
	for _, d := range []string{in, root, bundle} {
		setTimes(t, d, fixedTime)
	}
	return Layout{
		Kernel: FromFile(filepath.Join(in, "vmlinuz")),
		Initrd: FromFile(filepath.Join(in, "initrd.img")),
		ESP: map[string]Source{
			"/EFI/BOOT/BOOTX64.EFI":      FromFile(filepath.Join(in, "BOOTX64.EFI")),
			"/loader/loader.conf":        FromBytes([]byte("timeout 0\ndefault kpaas.conf\n")),
			"/loader/entries/kpaas.conf": FromBytes([]byte("title K-PaaS\nlinux /kpaas/vmlinuz\ninitrd /kpaas/initrd.img\noptions console=ttyS0\n")),
		},
		Root:    Payload{Dir: root},
		Bundle:  Payload{Dir: bundle},
		Cmdline: "console=ttyS0 quiet",
	}
}

func setTimes(t *testing.T, dir string, tm time.Time) {
	t.Helper()
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		ts := unix.NsecToTimespec(tm.UnixNano())
		return unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func sha256File(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// extract copies n bytes at off of the image to a new file.
func extract(t *testing.T, img string, off, n int64) string {
	t.Helper()
	src, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	p := filepath.Join(t.TempDir(), "part.img")
	dst, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if _, err := io.Copy(dst, io.NewSectionReader(src, off, n)); err != nil {
		t.Fatal(err)
	}
	return p
}

func noLeftovers(t *testing.T, out string) {
	t.Helper()
	for _, p := range []string{out, out + ".tmp.d", out + ".raw.tmp"} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s left behind", p)
		}
	}
	if tmps, _ := filepath.Glob(filepath.Join(filepath.Dir(out), atomicfile.TempPrefix+filepath.Base(out)+"-*")); len(tmps) > 0 {
		t.Errorf("temp files left behind: %v", tmps)
	}
}
