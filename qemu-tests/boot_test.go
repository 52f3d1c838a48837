//go:build qemu

package qemutests

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"kpaas.dev/appliance/agent/earlyboot"
	"kpaas.dev/appliance/builder/osimage"
	"kpaas.dev/appliance/images"
	"kpaas.dev/appliance/internal/bundle"
	"kpaas.dev/appliance/internal/names"
	"kpaas.dev/appliance/qemu-tests/vm"
)

// osImage builds (or takes from the cache) the default OS image. With
// KPAAS_OS_DIR set, it uses that `kpaas os build` output instead.
func osImage(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("KPAAS_OS_DIR"); dir != "" {
		return dir
	}
	if os.Geteuid() != 0 {
		t.Skip("building the OS image needs root (or set KPAAS_OS_DIR)")
	}
	vm.Need(t, "mmdebstrap", "go")
	def, err := images.Get(images.Default)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "os")
	start := time.Now()
	res, err := osimage.Build(context.Background(), def, out, osimage.Options{Log: testWriter{t}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("OS image %s built in %s", res.Ref, time.Since(start).Round(100*time.Millisecond))
	return out
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// rootSquashfs unpacks the OS image's layers and makes the root squashfs
// (zstd, which the kernel mounts).
func rootSquashfs(t *testing.T, layout, out string) {
	t.Helper()
	s, err := bundle.Open(layout)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := s.Entries()
	if err != nil || len(entries) == 0 {
		t.Fatalf("OS image layout: %v (%d entries)", err, len(entries))
	}
	raw, err := s.ReadManifest(entries[0].Descriptor)
	if err != nil {
		t.Fatal(err)
	}
	var m v1.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(t.TempDir(), "root")
	os.MkdirAll(root, 0o755)
	for _, l := range m.Layers {
		blob, _ := s.BlobPath(l.Digest)
		run(t, "tar", "-xzf", blob, "-C", root, "--numeric-owner")
	}
	run(t, "mksquashfs", root, out, "-comp", "zstd", "-noappend", "-quiet", "-no-progress")
}

// testBundle writes a small bundle (one file artifact and its lock) and
// packs it as a squashfs.
func testBundle(t *testing.T, out string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "bundle")
	s, err := bundle.Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	w := s.NewWriter()
	h, n, _ := w.WriteBytes([]byte("net.ipv4.ip_forward = 1\n"))
	fm, _ := bundle.FileManifest(v1.Descriptor{MediaType: "application/octet-stream", Digest: h, Size: n}, "sysctl", "1", "0644", "/etc/sysctl.d/99-k8s.conf")
	mh, mn, _ := w.WriteBytes(fm)
	ref := "kpaas.local/files/sysctl:1"
	if err := s.SetEntries([]v1.Descriptor{bundle.Annotate(v1.Descriptor{MediaType: types.OCIManifestSchema1, Digest: mh, Size: mn}, bundle.KindFile, ref)}); err != nil {
		t.Fatal(err)
	}
	lock := &bundle.Lock{APIVersion: "kpaas.dev/v1alpha1", Kind: bundle.LockKind, Name: "qemu-test", Version: "0.0.1",
		Artifacts: []bundle.LockArtifact{{Kind: bundle.KindFile, Ref: ref, Digest: mh.String()}}}
	b, _ := lock.Marshal()
	if _, err := s.WriteFile(bundle.LockFile, b); err != nil {
		t.Fatal(err)
	}
	run(t, "mksquashfs", dir, out, "-comp", "zstd", "-noappend", "-quiet", "-no-progress")
}

// gptDisk writes a raw GPT disk: KPAAS-ROOT-A and KPAAS-BUNDLE holding the
// given images, KPAAS-STATE blank (kpaas-init formats it on first boot).
func gptDisk(t *testing.T, out, rootImg, bundleImg string, stateMiB int64) {
	t.Helper()
	mib := func(path string) int64 {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()>>20 + 2
	}
	rootMiB, bundleMiB := mib(rootImg), mib(bundleImg)
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate((rootMiB + bundleMiB + stateMiB + 2) << 20); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sfdisk", "-q", out)
	cmd.Stdin = strings.NewReader(fmt.Sprintf("label: gpt\nsize=%dMiB, name=%s\nsize=%dMiB, name=%s\nname=%s\n",
		rootMiB, names.PartRootA, bundleMiB, names.PartBundle, names.PartState))
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, b)
	}
	parts, err := earlyboot.ReadGPT(f)
	if err != nil || len(parts) != 3 {
		t.Fatalf("GPT: %v %+v", err, parts)
	}
	for i, img := range []string{rootImg, bundleImg} {
		b, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(b, int64(parts[i].FirstLBA)*512); err != nil {
			t.Fatal(err)
		}
	}
}

func run(t *testing.T, prog string, args ...string) {
	t.Helper()
	start := time.Now()
	if b, err := exec.Command(prog, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", prog, strings.Join(args, " "), err, b)
	}
	t.Logf("%s took %s", prog, time.Since(start).Round(100*time.Millisecond))
}

func kernelOf(t *testing.T, layout string) string {
	k := filepath.Join(layout, "boot", "vmlinux")
	if _, err := os.Stat(k); err != nil {
		k = filepath.Join(layout, "boot", "vmlinuz")
	}
	return k
}

// TestBootDisk boots the OS image from a GPT disk: kpaas-init finds the
// partitions, formats the state, switches root; systemd starts the agent.
func TestBootDisk(t *testing.T) {
	vm.Need(t, "qemu-system-x86_64", "mksquashfs", "sfdisk", "tar")
	layout := osImage(t)
	dir := t.TempDir()
	rootImg, bundleImg, disk := filepath.Join(dir, "root.sqfs"), filepath.Join(dir, "bundle.sqfs"), filepath.Join(dir, "disk.raw")
	rootSquashfs(t, layout, rootImg)
	testBundle(t, bundleImg)
	gptDisk(t, disk, rootImg, bundleImg, 256)

	v := vm.Start(t, vm.WithMemory(1024), vm.WithDisk(disk, "raw"), vm.WithKernel(kernelOf(t, layout),
		filepath.Join(layout, "boot", osimage.InitrdFile), "console=ttyS0 quiet kpaas.debug systemd.show_status=1"))
	_, atInit := v.Expect(`kpaas-init .*: starting`, 2*time.Minute)
	_, atFormat := v.Expect(`kpaas-init: formatting /dev/vda3`, 2*time.Minute)
	_, atSwitch := v.Expect(`kpaas-init: switching root`, 2*time.Minute)
	line, atAgent := v.Expect(`kpaas-agent .*: bundle qemu-test 0\.0\.1 \(1 artifacts\) ready`, 5*time.Minute)
	t.Logf("init started %.1fs, state formatted %.1fs, switching root %.1fs, agent ready %.1fs: %s",
		atInit.Seconds(), atFormat.Seconds(), atSwitch.Seconds(), atAgent.Seconds(), line)
}

// TestBootRescue boots with no media: kpaas-init must say why and open
// its rescue shell instead of letting the kernel panic.
func TestBootRescue(t *testing.T) {
	vm.Need(t, "qemu-system-x86_64")
	layout := osImage(t)
	v := vm.Start(t, vm.WithMemory(1024), vm.WithKernel(kernelOf(t, layout),
		filepath.Join(layout, "boot", osimage.InitrdFile), "console=ttyS0 quiet kpaas.wait=2"))
	v.Expect(`kpaas-init: BOOT FAILED: devices: no partition named KPAAS-ROOT-A and no ISO labelled KPAAS`, 2*time.Minute)
	_, at := v.Expect(`kpaas-init: rescue shell: built-in`, 30*time.Second)
	t.Logf("rescue shell after %.1fs", at.Seconds())
}
