package disk

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"kpaas.dev/appliance/internal/diskplan"
	"kpaas.dev/appliance/internal/testenv"
)

// The ISO's install plan, applied to a blank disk, gives the raw image
// byte for byte, with the kernel, initrd, root and bundle read from the
// ISO's own files and only the rest stored in the plan's blob.
func TestISOInstallPlanIsTheRawImage(t *testing.T) {
	need(t, "xorriso")
	if _, err := FindSyslinux(); err != nil {
		testenv.SkipOrFail(t, err.Error())
	}
	ctx := context.Background()
	l := fixture(t)
	// a kernel that ends inside a sector, like a real one
	writeFile(t, l.Kernel.path, randomBytes(7, 300<<10+100))
	dir := t.TempDir()
	iso, raw := filepath.Join(dir, "kpaas.iso"), filepath.Join(dir, "kpaas.raw")
	isum, err := WriteISO(ctx, l, iso)
	if err != nil {
		t.Fatal(err)
	}
	rsum, err := WriteRaw(ctx, l, raw)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "kpaas.iso.tmp.d.plan.raw")); err == nil {
		t.Error("the plan's scratch image was left behind")
	}

	media := t.TempDir()
	args := []string{"-osirrox", "on", "-indev", iso}
	for _, p := range []string{ISOPlanPath, ISOPlanBlob, KernelPath, InitrdPath, ISORootPath, ISOBundlePath} {
		if err := os.MkdirAll(filepath.Join(media, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		args = append(args, "-extract", p, filepath.Join(media, p))
	}
	run(t, "xorriso", args...)

	f, err := os.Open(filepath.Join(media, ISOPlanPath))
	if err != nil {
		t.Fatal(err)
	}
	plan, err := diskplan.Parse(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if plan.DiskSize != rsum.Size || plan.DiskGUID != rsum.DiskGUID || plan.StatePartition != 5 {
		t.Errorf("plan: size %d GUID %s state %d, raw image: %d %s", plan.DiskSize, plan.DiskGUID, plan.StatePartition, rsum.Size, rsum.DiskGUID)
	}
	if isum.Install == nil || isum.Install.DiskGUID != rsum.DiskGUID {
		t.Errorf("ISO summary install: %+v", isum.Install)
	}
	from := map[string]bool{}
	for _, e := range plan.Extents {
		from[e.File] = true
	}
	for _, want := range []string{"kpaas/vmlinuz", "kpaas/initrd.img", "kpaas/root.squashfs", "kpaas/bundle.squashfs", "kpaas/install/disk.img", ""} {
		if !from[want] {
			t.Errorf("no extent from %q: %s", want, plan.Summary())
		}
	}
	// the blob holds the tables and small files, not the kernel or initrd
	blob, _ := os.Stat(filepath.Join(media, ISOPlanBlob))
	if blob.Size() > 400<<10 {
		t.Errorf("plan blob is %d bytes: the kernel or initrd went into it?", blob.Size())
	}
	t.Logf("plan: %s; blob %d bytes", plan.Summary(), blob.Size())

	// a disk that held something else: every byte the plan covers is
	// replaced, and the rest of a blank disk matches the raw image
	target := filepath.Join(dir, "target")
	garbage := bytes.Repeat([]byte{0xa5}, int(plan.DiskSize))
	if err := os.WriteFile(target, garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	tf, err := os.OpenFile(target, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer tf.Close()
	var last int64
	err = diskplan.Apply(ctx, plan, os.DirFS(media), tf, diskplan.Options{Progress: func(done, total int64) { last = done }})
	if err != nil {
		t.Fatal(err)
	}
	if last != plan.Bytes() {
		t.Errorf("progress ended at %d of %d", last, plan.Bytes())
	}
	if err := diskplan.Verify(ctx, plan, tf, diskplan.Options{}); err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(raw)
	got, _ := os.ReadFile(target)
	for _, e := range plan.Extents {
		if !bytes.Equal(got[e.Offset:e.End()], want[e.Offset:e.End()]) {
			t.Errorf("extent %s differs from the raw image", e)
		}
	}
	// on a blank disk, the whole image
	blank := filepath.Join(dir, "blank")
	bf, err := os.Create(blank)
	if err != nil {
		t.Fatal(err)
	}
	defer bf.Close()
	if err := bf.Truncate(plan.DiskSize); err != nil {
		t.Fatal(err)
	}
	if err := diskplan.Apply(ctx, plan, os.DirFS(media), bf, diskplan.Options{}); err != nil {
		t.Fatal(err)
	}
	got, _ = os.ReadFile(blank)
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && i < len(want) && got[i] == want[i] {
			i++
		}
		t.Fatalf("installed blank disk differs from the raw image at byte %d (sizes %d, %d)", i, len(got), len(want))
	}

	// a damaged medium is refused, naming the file
	bad := filepath.Join(media, KernelPath)
	k, _ := os.ReadFile(bad)
	k[1000] ^= 1
	writeFile(t, bad, k)
	err = diskplan.Apply(ctx, plan, os.DirFS(media), bf, diskplan.Options{})
	if err == nil || !strings.Contains(err.Error(), "kpaas/vmlinuz") {
		t.Errorf("damaged kernel on the medium: %v", err)
	}
}

// The install entries: isolinux's default follows ISOInstallDefault, and
// the install entry carries the target.
func TestIsolinuxInstallEntry(t *testing.T) {
	cfg := IsolinuxConfig("console=ttyS0", "/dev/sda", true)
	for _, want := range []string{"default install\n", "prompt 1\n", "timeout 30\n", "append console=ttyS0 kpaas.install=/dev/sda\n", "label live\n"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("isolinux.cfg lacks %q:\n%s", want, cfg)
		}
	}
	if cfg := IsolinuxConfig("console=ttyS0", "", false); !strings.Contains(cfg, "default live\n") || !strings.Contains(cfg, "kpaas.install=auto\n") {
		t.Errorf("isolinux.cfg:\n%s", cfg)
	}
}
