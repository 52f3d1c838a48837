package disk_test

import (
	"cmp"
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"kpaas.dev/appliance/builder/disk"
)

// A disk image from a kernel, an initrd, a systemd-boot ESP, a root folder
// and a bundle folder; the same Layout gives a qcow2 or an ISO.
func ExampleWriteRaw() {
	dir, err := os.MkdirTemp("", "kpaas-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	// stand-ins for the real inputs
	for p, content := range map[string]string{
		"boot/vmlinuz":              "kernel",
		"boot/initrd.img":           "initramfs",
		"boot/systemd-bootx64.efi":  "MZ boot loader",
		"root/etc/os-release":       "ID=debian\n",
		"bundle/oci-layout":         `{"imageLayoutVersion":"1.0.0"}`,
		"bundle/index.json":         `{"schemaVersion":2,"manifests":[]}`,
		"bundle/blobs/sha256/.keep": "",
	} {
		p = filepath.Join(dir, p)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte(content), 0o644)
	}

	layout := disk.Layout{
		Kernel: disk.FromFile(filepath.Join(dir, "boot/vmlinuz")),
		Initrd: disk.FromFile(filepath.Join(dir, "boot/initrd.img")),
		ESP: map[string]disk.Source{
			"/EFI/BOOT/BOOTX64.EFI":      disk.FromFile(filepath.Join(dir, "boot/systemd-bootx64.efi")),
			"/loader/loader.conf":        disk.FromBytes([]byte("timeout 0\ndefault kpaas.conf\n")),
			"/loader/entries/kpaas.conf": disk.FromBytes([]byte("title K-PaaS\nlinux /kpaas/vmlinuz\ninitrd /kpaas/initrd.img\noptions console=ttyS0\n")),
		},
		Root:   disk.Payload{Dir: filepath.Join(dir, "root")},
		Bundle: disk.Payload{Dir: filepath.Join(dir, "bundle")},
	}
	sum, err := disk.WriteRaw(context.Background(), layout, filepath.Join(dir, "kpaas.raw"),
		disk.WithSeed("example"))
	if err != nil {
		log.Fatal(err)
	}
	for _, p := range sum.Partitions {
		fmt.Printf("%d %-12s at %2d MiB, %2d MiB, %s\n", p.Index, p.Name, p.Offset>>20, p.Size>>20, cmp.Or(p.Filesystem, "blank"))
	}
	fmt.Println("disk", sum.Size>>20, "MiB")
	// Output:
	// 1 EFI          at  1 MiB, 64 MiB, vfat
	// 2 KPAAS-ROOT-A at 65 MiB,  1 MiB, squashfs
	// 3 KPAAS-ROOT-B at 66 MiB,  1 MiB, blank
	// 4 KPAAS-BUNDLE at 67 MiB,  1 MiB, squashfs
	// 5 KPAAS-STATE  at 68 MiB, 16 MiB, blank
	// disk 85 MiB
}

// The raw disk's BIOS menu repeats the ESP's systemd-boot entries.
func ExampleBIOSMenu() {
	menu, err := disk.BIOSMenu(map[string]disk.Source{
		disk.LoaderConf:              disk.FromBytes([]byte("default kpaas.conf\ntimeout 0\n")),
		"/loader/entries/kpaas.conf": disk.FromBytes([]byte("title K-PaaS\nlinux /kpaas/vmlinuz\ninitrd /kpaas/initrd.img\noptions console=ttyS0 kpaas.root=KPAAS-ROOT-A\n")),
	}, "")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(menu)
	// Output:
	// # The ESP's loader entries (/loader/entries) for syslinux: one menu, two loaders.
	// default kpaas
	// prompt 0
	// timeout 0
	//
	// label kpaas
	//   # K-PaaS
	//   kernel /kpaas/vmlinuz
	//   initrd /kpaas/initrd.img
	//   append console=ttyS0 kpaas.root=KPAAS-ROOT-A
}
