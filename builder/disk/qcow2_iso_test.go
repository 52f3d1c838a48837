package disk

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"kpaas.dev/appliance/internal/testenv"
)

func TestQCOW2(t *testing.T) {
	need(t, "qemu-img")
	ctx := context.Background()
	dir := t.TempDir()
	raw, qcow := filepath.Join(dir, "disk.raw"), filepath.Join(dir, "disk.qcow2")
	rs, err := WriteRaw(ctx, fixture(t), raw)
	if err != nil {
		t.Fatal(err)
	}
	qs, err := WriteQCOW2(ctx, fixture(t), qcow)
	if err != nil {
		t.Fatal(err)
	}
	noLeftovers(t, qcow+".raw") // the intermediate raw image is gone
	run(t, "qemu-img", "check", qcow)
	if out := run(t, "qemu-img", "compare", raw, qcow); !strings.Contains(out, "identical") {
		t.Errorf("qemu-img compare: %s", out)
	}
	var info struct {
		Format      string `json:"format"`
		VirtualSize int64  `json:"virtual-size"`
		ActualSize  int64  `json:"actual-size"`
	}
	if err := json.Unmarshal([]byte(run(t, "qemu-img", "info", "--output=json", qcow)), &info); err != nil {
		t.Fatal(err)
	}
	if info.Format != "qcow2" || info.VirtualSize != rs.Size {
		t.Errorf("qemu-img info: %+v, want qcow2 of %d bytes", info, rs.Size)
	}
	if info.ActualSize >= rs.Size/4 || qs.Size >= rs.Size/4 {
		t.Errorf("qcow2 not sparse: %d bytes on disk, file %d, raw %d", info.ActualSize, qs.Size, rs.Size)
	}
	t.Logf("raw %d bytes (%d allocated), qcow2 %d bytes", rs.Size, rs.Allocated, qs.Size)
}

func TestISO(t *testing.T) {
	need(t, "xorriso", "fdisk", "mdir", "fsck.vfat", "unsquashfs")
	if _, err := FindSyslinux(); err != nil {
		testenv.SkipOrFail(t, err.Error())
	}
	ctx := context.Background()
	l := fixture(t)
	l.ISOESP = map[string]Source{
		"/loader/entries/kpaas-install.conf": FromBytes([]byte("title K-PaaS install\nlinux /kpaas/vmlinuz\ninitrd /kpaas/initrd.img\noptions console=ttyS0 kpaas.install=auto\n")),
	}
	out := filepath.Join(t.TempDir(), "kpaas.iso")
	sum, err := WriteISO(ctx, l, out)
	if err != nil {
		t.Fatal(err)
	}
	noLeftovers(t, out+".x") // no stage folder or temp file
	if _, err := os.Stat(out + ".tmp.d"); err == nil {
		t.Error("stage folder left behind")
	}
	t.Logf("iso: %d bytes, steps %v", sum.Size, sum.Steps)

	et := run(t, "xorriso", "-indev", out, "-report_el_torito", "plain")
	for _, want := range []string{"El Torito boot img :   1  BIOS  y   none", "El Torito boot img :   2  UEFI  y   none",
		"/isolinux/isolinux.bin", ISOEFIBootPath, "El Torito catalog  : "} {
		if !strings.Contains(et, want) {
			t.Errorf("El Torito report lacks %q:\n%s", want, et)
		}
	}
	if !strings.Contains(et, "Volume id    : 'KPAAS'") && !strings.Contains(run(t, "xorriso", "-indev", out, "-pvd_info"), "Volume Id    : KPAAS") {
		t.Errorf("volume label is not KPAAS")
	}
	files := run(t, "xorriso", "-indev", out, "-find", "/", "-type", "f")
	for _, want := range []string{"/kpaas/vmlinuz", "/kpaas/initrd.img", ISORootPath, ISOBundlePath,
		"/isolinux/isolinux.bin", "/isolinux/ldlinux.c32", "/isolinux/isolinux.cfg", ISOEFIBootPath} {
		if !strings.Contains(files, "'"+want+"'") {
			t.Errorf("ISO lacks %s:\n%s", want, files)
		}
	}

	// isolinux.cfg with the live and install entries
	x := t.TempDir()
	run(t, "xorriso", "-osirrox", "on", "-indev", out,
		"-extract", "/isolinux/isolinux.cfg", filepath.Join(x, "isolinux.cfg"),
		"-extract", ISOEFIBootPath, filepath.Join(x, "efiboot.img"),
		"-extract", ISORootPath, filepath.Join(x, "root.squashfs"))
	cfg, _ := os.ReadFile(filepath.Join(x, "isolinux.cfg"))
	if string(cfg) != IsolinuxConfig(l.Cmdline, "", false) || !strings.Contains(string(cfg), "append console=ttyS0 quiet kpaas.install=auto") {
		t.Errorf("isolinux.cfg:\n%s", cfg)
	}
	// the EFI image: clean FAT with the boot loader, its entries and the kernel
	run(t, "fsck.vfat", "-n", filepath.Join(x, "efiboot.img"))
	ls := run(t, "mdir", "-i", filepath.Join(x, "efiboot.img"), "-/", "-b", "::/")
	for _, want := range []string{"::/EFI/BOOT/BOOTX64.EFI", "::/loader/entries/kpaas-install.conf", "::/kpaas/vmlinuz"} {
		if !strings.Contains(ls, want) {
			t.Errorf("efiboot.img lacks %s:\n%s", want, ls)
		}
	}
	sameTree(t, l.Root.Dir, unsquash(t, filepath.Join(x, "root.squashfs")))

	// the hybrid MBR: BIOS partition over the image, EFI partition on efiboot.img
	fd := run(t, "fdisk", "-l", out)
	if !strings.Contains(fd, "Disklabel type: dos") || !strings.Contains(fd, out+"1 *") ||
		!strings.Contains(fd, "EFI (FAT-12/16/32)") {
		t.Errorf("fdisk -l:\n%s", fd)
	}
	if sum.Size%(1<<20) != 0 {
		t.Errorf("ISO of %d bytes is not padded to 1 MiB", sum.Size)
	}
}
