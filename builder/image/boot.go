package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"kpaas.dev/appliance/builder/disk"
	"kpaas.dev/appliance/builder/disk/squashfs"
	"kpaas.dev/appliance/internal/bundle"
)

// bootFiles takes the kernel, the initramfs and systemd-boot (and the
// syslinux files, when the image has them) out of the tree, and writes the
// loader configuration: the UEFI loader's entries, which the raw disk's
// BIOS menu repeats (disk.BIOSMenu).
func (b *build) bootFiles(ctx context.Context) error {
	m := b.manifest
	files := []struct {
		what, src, dst string
		optional       bool
	}{
		{"kernel (dev.kpaas.os.kernel)", m.kernel, "vmlinuz", false},
		{"initramfs (dev.kpaas.os.initrd)", m.initrd, "initrd.img", false},
		{"systemd-boot (package systemd-boot-efi)", SystemdBootPath, "BOOTX64.EFI", false},
		{"isolinux.bin", isolinuxBin, "isolinux.bin", true},
		{"isohdpfx.bin", isohdpfxBin, "isohdpfx.bin", true},
		{"ldlinux.c32", ldlinuxC32, "ldlinux.c32", true},
		{"gptmbr.bin", gptmbrBin, "gptmbr.bin", true},
		{"syslinux", syslinuxBin, "syslinux", true},
	}
	var errs []error
	found := map[string]bool{}
	for _, f := range files {
		err := b.extract(f.src, b.path(f.dst))
		switch {
		case err == nil && f.optional:
			found[f.dst] = true
		case err != nil && !f.optional:
			errs = append(errs, fmt.Errorf("%s /%s: %w", f.what, f.src, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("OS image %s: %w", b.osEntry.Ref, errors.Join(errs...))
	}
	// The BIOS boot files come from the image, like systemd-boot, where
	// it has them; the host's otherwise.
	var sl disk.Syslinux
	if found["isolinux.bin"] && found["isohdpfx.bin"] && found["ldlinux.c32"] {
		sl.ISOLinux, sl.HybridMBR, sl.LDLinux = b.path("isolinux.bin"), b.path("isohdpfx.bin"), b.path("ldlinux.c32")
	}
	if found["gptmbr.bin"] {
		sl.GPTMBR = b.path("gptmbr.bin")
	}
	if found["syslinux"] {
		sl.Installer = b.path("syslinux")
	}
	if sl != (disk.Syslinux{}) {
		b.syslinux = &sl
	}

	title := "K-PaaS " + b.osEntry.Ref
	isoDefault := path.Base(EntryPath)
	if b.o.Install != "" { // an unattended installer
		isoDefault = path.Base(InstallPath)
	}
	live := strings.Join(strings.Fields(m.cmdline+" "+b.o.Cmdline), " ")
	installed := strings.Join(strings.Fields(m.cmdline+" kpaas.root="+disk.NameRootA+" "+b.o.Cmdline), " ")
	b.sum.Cmdline = installed
	b.layout = disk.Layout{
		Kernel: disk.FromFile(b.path("vmlinuz")),
		Initrd: disk.FromFile(b.path("initrd.img")),
		ESP: map[string]disk.Source{
			BootLoaderPath: disk.FromFile(b.path("BOOTX64.EFI")),
			LoaderConfPath: disk.FromBytes([]byte("default kpaas.conf\ntimeout 0\neditor no\n")),
			EntryPath:      disk.FromBytes(loaderEntry(title, b.sum.KernelRelease, installed)),
		},
		ISOESP: map[string]disk.Source{
			LoaderConfPath: disk.FromBytes([]byte("default " + isoDefault + "\ntimeout 3\neditor no\n")),
			EntryPath:      disk.FromBytes(loaderEntry(title+" (live)", b.sum.KernelRelease, live)),
			InstallPath:    disk.FromBytes(loaderEntry(title+" (install to disk)", b.sum.KernelRelease, live+" "+disk.InstallArgFor(b.o.Install))),
		},
		Root:              disk.Payload{Image: b.path("root.squashfs")},
		Sizes:             disk.Sizes{Disk: b.o.DiskSize},
		Cmdline:           live,
		ISOInstall:        b.o.Install,
		ISOInstallDefault: b.o.Install != "",
	}
	if b.o.Config != "" {
		b.layout.ESP[ConfigPath] = disk.FromFile(b.o.Config)
	}
	// The key the node's agent checks the bundle's signature with.
	if b.o.PublicKey != nil {
		pemKey, err := bundle.MarshalPublicKey(b.o.PublicKey)
		if err != nil {
			return err
		}
		b.layout.ESP[PublicKeyPath] = disk.FromBytes(pemKey)
	}
	return nil
}

// loaderEntry is a systemd-boot entry (Boot Loader Specification, type 1).
func loaderEntry(title, version, cmdline string) []byte {
	var s strings.Builder
	fmt.Fprintf(&s, "title   %s\n", title)
	if version != "" {
		fmt.Fprintf(&s, "version %s\n", version)
	}
	fmt.Fprintf(&s, "linux   %s\ninitrd  %s\noptions %s\n", disk.KernelPath, disk.InitrdPath, cmdline)
	return []byte(s.String())
}

// extract copies the regular file at src in the tree (symlinks followed)
// to dst.
func (b *build) extract(src, dst string) error {
	r, err := b.tree.Open(src)
	if err != nil {
		return err
	}
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// rootFS writes the root squashfs once; every format copies it.
func (b *build) rootFS(ctx context.Context) error {
	st, err := b.tree.WriteFile(ctx, b.path("root.squashfs"), squashfs.Options{ModTime: b.time})
	if err != nil {
		return err
	}
	b.sum.Root = RootSummary{Size: st.Size, Inodes: st.Inodes, Files: st.Files, InputBytes: st.InputBytes}
	// the spool is not needed any more
	err = b.tree.Close()
	b.tree = nil
	return err
}
