package disk

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/iso9660"

	"kpaas.dev/appliance/builder/disk/isohybrid"
	"kpaas.dev/appliance/builder/disk/squashfs"
	"kpaas.dev/appliance/internal/names"
	"kpaas.dev/appliance/internal/steps"
)

// Paths inside the ISO.
const (
	ISORootPath    = "/" + names.ISORoot
	ISOBundlePath  = "/" + names.ISOBundle
	ISOEFIBootPath = "/" + names.ISOESP
	isolinuxDir    = "/isolinux"
	// InstallArg is the kernel argument of the ISO's "install" entry: the
	// node installs the disk layout onto its disk and reboots into it.
	InstallArg = "kpaas.install=auto"
	// maxISOFile is the largest file ISO 9660 holds in one extent.
	maxISOFile = 1<<32 - 1
)

// Syslinux names the BIOS boot files, read at build time: the ISO's
// (isolinux) and the raw disk's (syslinux on the ESP). Empty fields take
// FindSyslinux's.
type Syslinux struct {
	ISOLinux  string // isolinux.bin (Debian package isolinux)
	LDLinux   string // ldlinux.c32 for BIOS (syslinux-common), the ISO's
	HybridMBR string // isohdpfx.bin, the hybrid MBR boot code (isolinux)
	// GPTMBR is the raw disk's MBR code: gptmbr.bin (syslinux-common).
	GPTMBR string
	// Installer is the syslinux installer (package syslinux), which holds
	// the FAT boot sector, ldlinux.sys and the ldlinux.c32 built with it.
	Installer string
}

// FindSyslinux finds the syslinux files where Debian installs them.
func FindSyslinux() (Syslinux, error) {
	s := defaultSyslinux
	return s, errors.Join(s.checkISO(), s.checkDisk())
}

var defaultSyslinux = Syslinux{
	ISOLinux:  "/usr/lib/ISOLINUX/isolinux.bin",
	LDLinux:   "/usr/lib/syslinux/modules/bios/ldlinux.c32",
	HybridMBR: "/usr/lib/ISOLINUX/isohdpfx.bin",
	GPTMBR:    "/usr/lib/syslinux/mbr/gptmbr.bin",
	Installer: "/usr/bin/syslinux",
}

// withDefaults fills the empty fields with FindSyslinux's paths.
func (s Syslinux) withDefaults() Syslinux {
	d := defaultSyslinux
	for _, f := range []struct{ v, def *string }{{&s.ISOLinux, &d.ISOLinux}, {&s.LDLinux, &d.LDLinux},
		{&s.HybridMBR, &d.HybridMBR}, {&s.GPTMBR, &d.GPTMBR}, {&s.Installer, &d.Installer}} {
		if *f.v == "" {
			*f.v = *f.def
		}
	}
	return s
}

func (s Syslinux) checkISO() error {
	return checkFiles("syslinux files for the ISO (install the Debian packages isolinux and syslinux-common)", s.ISOLinux, s.LDLinux, s.HybridMBR)
}

func (s Syslinux) checkDisk() error {
	return checkFiles("syslinux files for the disk's BIOS boot (install the Debian packages syslinux and syslinux-common)", s.GPTMBR, s.Installer)
}

func checkFiles(what string, paths ...string) error {
	var errs []error
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s: %w", what, errors.Join(errs...))
	}
	return nil
}

// IsolinuxConfig is the isolinux.cfg of the ISO: "live" runs the system
// from the ISO, "install" adds kpaas.install=TARGET (InstallArg: auto, the
// only empty disk). The default is live, or install when installDefault
// (an unattended installer); the prompt waits 3 seconds for another
// choice.
func IsolinuxConfig(cmdline, target string, installDefault bool) string {
	entry := func(label, extra string) string {
		args := strings.TrimSpace(cmdline + " " + extra)
		return fmt.Sprintf("label %s\n  kernel %s\n  initrd %s\n  append %s\n", label, KernelPath, InitrdPath, args)
	}
	def := "live"
	if installDefault {
		def = "install"
	}
	arg := InstallArgFor(target)
	return fmt.Sprintf("default %s\nprompt 1\ntimeout 30\n", def) +
		"say K-PaaS: type 'live' to run from this medium, 'install' to write it onto the disk (" + arg + ").\n" +
		"say Starting '" + def + "' in 3 seconds.\n\n" +
		entry("live", "") + "\n" + entry("install", arg)
}

// InstallArgFor is the kernel argument that installs onto target (a
// device path, or "" / "auto" for the only empty disk).
func InstallArgFor(target string) string {
	if target == "" {
		return InstallArg
	}
	return "kpaas.install=" + target
}

// WriteISO writes l as a hybrid ISO 9660 image (Rock Ridge, El Torito for
// BIOS with isolinux and for UEFI with a FAT image of the ESP files, plus an
// isohybrid MBR so the file also boots written to a USB stick).
//
// ISO 9660 stores files below 4 GiB only; a larger root or bundle image is
// an error.
func WriteISO(ctx context.Context, l Layout, out string, opts ...Option) (*Summary, error) {
	o := newOptions(opts)
	sl := o.syslinuxFiles()
	if err := errors.Join(l.validate(), sl.checkISO(), sl.checkDisk()); err != nil {
		return nil, err
	}
	stage := out + ".tmp.d"
	if err := os.RemoveAll(stage); err != nil {
		return nil, err
	}
	defer os.RemoveAll(stage)
	return writeAtomically(out, func(f *os.File) (*Summary, error) {
		b := &isoBuild{f: f, l: &l, o: o, sl: sl, stage: stage, sum: &Summary{Format: ISO, Firmware: []Firmware{BIOS, UEFI}}}
		return b.run(ctx)
	})
}

type isoBuild struct {
	f     *os.File
	l     *Layout
	o     *options
	sl    Syslinux
	stage string
	sum   *Summary

	created    []string // staged files and folders we made (their mtimes are set)
	root, bund placed
	seed       string
	efiSize    int64
}

func (b *isoBuild) run(ctx context.Context) (*Summary, error) {
	start := time.Now()
	list := []steps.Step{
		{Name: "stage", Run: b.stageBoot},       // isolinux, its config, kernel, initrd
		{Name: "root", Run: b.stageRoot},        // /kpaas/root.squashfs
		{Name: "bundle", Run: b.stageBundle},    // /kpaas/bundle.squashfs
		{Name: "install", Run: b.stagePlan},     // /kpaas/install: the disk the install entry writes
		{Name: "efiboot", Run: b.stageEFIBoot},  // FAT image with the ESP files
		{Name: "iso", Run: b.writeISO},          // ISO 9660 + Rock Ridge + El Torito
		{Name: "hybrid", Run: b.writeHybridMBR}, // MBR for USB sticks, padding
	}
	r := &steps.Runner{Observe: func(e steps.Event) {
		if e.State == steps.Done {
			b.sum.Steps = append(b.sum.Steps, Step{e.Step, e.Duration})
		}
	}}
	if err := r.Run(ctx, list); err != nil {
		return nil, fmt.Errorf("ISO, %w", err) // "ISO, STEP: cause"
	}
	b.sum.Duration = time.Since(start)
	return b.sum, nil
}

func (b *isoBuild) path(p string) string { return filepath.Join(b.stage, filepath.FromSlash(p)) }

func (b *isoBuild) mkdir(p string) error {
	for d := p; d != "/" && d != "."; d = filepath.ToSlash(filepath.Dir(d)) {
		if _, err := os.Stat(b.path(d)); err != nil {
			b.created = append(b.created, b.path(d))
		}
	}
	return os.MkdirAll(b.path(p), 0o755)
}

// put places src at p: a hard link to a host file when possible (no
// copy), otherwise a copy.
func (b *isoBuild) put(p string, src Source) error {
	if err := b.mkdir(filepath.ToSlash(filepath.Dir(p))); err != nil {
		return err
	}
	dst := b.path(p)
	if src.path != "" {
		if err := os.Link(src.path, dst); err == nil {
			return nil
		}
	} else {
		b.created = append(b.created, dst)
	}
	r, _, err := src.open()
	if err != nil {
		return err
	}
	defer r.Close()
	w, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	_, err = io.Copy(w, r)
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	return err
}

func (b *isoBuild) stageBoot(ctx context.Context) error {
	if err := os.Mkdir(b.stage, 0o755); err != nil {
		return err
	}
	for _, f := range []struct {
		p   string
		src Source
	}{
		{isolinuxDir + "/isolinux.bin", FromFile(b.sl.ISOLinux)},
		{isolinuxDir + "/ldlinux.c32", FromFile(b.sl.LDLinux)},
		{isolinuxDir + "/isolinux.cfg", FromBytes([]byte(IsolinuxConfig(b.l.Cmdline, b.l.ISOInstall, b.l.ISOInstallDefault)))},
		{KernelPath, b.l.Kernel},
		{InitrdPath, b.l.Initrd},
	} {
		if err := b.put(f.p, f.src); err != nil {
			return fmt.Errorf("%s: %w", f.p, err)
		}
	}
	// isolinux.bin gets the boot info table patched into the ISO's copy only;
	// a private copy keeps the host's file out of harm's way all the same.
	return b.copyInsteadOfLink(isolinuxDir + "/isolinux.bin")
}

func (b *isoBuild) copyInsteadOfLink(p string) error {
	data, err := os.ReadFile(b.path(p))
	if err != nil {
		return err
	}
	if err := os.Remove(b.path(p)); err != nil {
		return err
	}
	b.created = append(b.created, b.path(p))
	return os.WriteFile(b.path(p), data, 0o644)
}

func (b *isoBuild) stagePayload(ctx context.Context, p string, what string, pl Payload, defComp squashfs.Compression) (placed, error) {
	if err := b.mkdir(filepath.ToSlash(filepath.Dir(p))); err != nil {
		return placed{}, err
	}
	if pl.Image != "" {
		if err := b.put(p, FromFile(pl.Image)); err != nil {
			return placed{}, err
		}
		fi, err := os.Stat(b.path(p))
		if err != nil {
			return placed{}, err
		}
		if fi.Size() > maxISOFile {
			return placed{}, fmt.Errorf("%s image %s is %d bytes: ISO 9660 files must be smaller than 4 GiB", what, pl.Image, fi.Size())
		}
		f, err := os.Open(b.path(p))
		if err != nil {
			return placed{}, err
		}
		defer f.Close()
		si, err := readSquashInfo(f, 0)
		return placed{used: fi.Size(), mkfs: si.mkfsTime}, err
	}
	so := pl.Squashfs
	if so.Compression == "" {
		so.Compression = defComp
	}
	if so.ModTime.IsZero() {
		so.ModTime = b.o.time
	}
	if so.MaxSize == 0 {
		so.MaxSize = maxISOFile
	}
	so.Progress = b.o.report(what)
	st, err := squashfs.WriteFile(ctx, b.path(p), pl.Dir, so)
	if errors.Is(err, squashfs.ErrTooLarge) {
		return placed{}, fmt.Errorf("%s: ISO 9660 files must be smaller than 4 GiB: %w", what, err)
	}
	if err != nil {
		return placed{}, fmt.Errorf("packing %s %s: %w", what, pl.Dir, err)
	}
	b.created = append(b.created, b.path(p))
	return placed{used: st.Size, mkfs: st.ModTime, packed: true, squash: st}, nil
}

func (b *isoBuild) stageRoot(ctx context.Context) (err error) {
	b.root, err = b.stagePayload(ctx, ISORootPath, "root", b.l.Root, squashfs.Zstd)
	return err
}

func (b *isoBuild) stageBundle(ctx context.Context) (err error) {
	b.bund, err = b.stagePayload(ctx, ISOBundlePath, "bundle", b.l.Bundle, squashfs.None)
	return err
}

// stagePlan stages the install plan: the raw disk image, described by the
// ISO's own files (internal/diskplan), which kpaas-init writes onto the
// target disk in install mode.
func (b *isoBuild) stagePlan(ctx context.Context) error {
	if err := b.mkdir(filepath.ToSlash(filepath.Dir(ISOPlanPath))); err != nil {
		return err
	}
	rel := func(p string) string { return strings.TrimPrefix(p, "/") }
	blob := b.path(ISOPlanBlob)
	b.created = append(b.created, blob)
	plan, err := installPlan(ctx, *b.l, b.o,
		planFile{rel(ISORootPath), b.path(ISORootPath)},
		planFile{rel(ISOBundlePath), b.path(ISOBundlePath)},
		[]planFile{{rel(KernelPath), b.path(KernelPath)}, {rel(InitrdPath), b.path(InitrdPath)}},
		b.stage+".plan.raw", blob)
	if err != nil {
		return err
	}
	b.created = append(b.created, b.path(ISOPlanPath))
	if err := writePlan(plan, b.path(ISOPlanPath)); err != nil {
		return err
	}
	b.sum.Install = &InstallSummary{DiskSize: plan.DiskSize, DiskGUID: plan.DiskGUID, Extents: len(plan.Extents), Bytes: plan.Bytes()}
	return nil
}

func (b *isoBuild) stageEFIBoot(ctx context.Context) error {
	files := espFiles(b.l, b.l.ISOESP)
	t := b.o.time
	if t.IsZero() {
		t = newestMtime(slices.Collect(maps.Values(files))...)
		for _, p := range []placed{b.root, b.bund} {
			if p.mkfs.After(t) {
				t = p.mkfs
			}
		}
	}
	b.sum.Time = t
	b.seed = b.o.seed
	if b.seed == "" {
		h := seedHash()
		for _, p := range slices.Sorted(maps.Keys(files)) {
			r, _, err := files[p].open()
			if err != nil {
				return err
			}
			fmt.Fprintf(h, "%s\x00", p)
			_, err = io.Copy(h, r)
			r.Close()
			if err != nil {
				return err
			}
		}
		for _, p := range []string{ISORootPath, ISOBundlePath} {
			f, err := os.Open(b.path(p))
			if err != nil {
				return err
			}
			err = hashSquashfs(h, f, 0)
			f.Close()
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
		}
		b.seed = hex.EncodeToString(h.Sum(nil))
	}

	need, err := filesBytes(files)
	if err != nil {
		return err
	}
	size := max(8*mib, roundMiB(need+need/20+2*mib))
	kind := fat16Kind
	if size > 1<<30 {
		kind = fat32Kind
	}
	if err := b.mkdir(filepath.ToSlash(filepath.Dir(ISOEFIBootPath))); err != nil {
		return err
	}
	p := b.path(ISOEFIBootPath)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	b.created = append(b.created, p)
	err = f.Truncate(size)
	if err == nil {
		err = writeFAT(f, 0, size, kind, NameESP, files, t, deriveSerial(b.seed, "efiboot-serial"), b.o.report("efiboot"))
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	b.efiSize = size
	return err
}

func (b *isoBuild) writeISO(ctx context.Context) error {
	// our own staged files and folders carry the build time
	for _, p := range b.created {
		if err := os.Chtimes(p, b.sum.Time, b.sum.Time); err != nil {
			return err
		}
	}
	if err := os.Chtimes(b.stage, b.sum.Time, b.sum.Time); err != nil {
		return err
	}
	var files []File
	err := filepath.WalkDir(b.stage, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(b.stage, p)
		files = append(files, File{Path: "/" + filepath.ToSlash(rel), Size: fi.Size()})
		return nil
	})
	if err != nil {
		return err
	}
	b.sum.Files = files

	iso, err := iso9660.Create(file.New(b.f, false), 0, 0, 2048, b.stage)
	if err != nil {
		return err
	}
	bios := &iso9660.ElToritoEntry{
		Platform:  iso9660.BIOS,
		Emulation: iso9660.NoEmulation,
		BootFile:  isolinuxDir + "/isolinux.bin",
		BootTable: true,
	}
	bios.SetLoadSize(4)
	efi := &iso9660.ElToritoEntry{Platform: iso9660.EFI, Emulation: iso9660.NoEmulation, BootFile: ISOEFIBootPath}
	err = iso.Finalize(iso9660.FinalizeOptions{
		RockRidge:        true,
		VolumeIdentifier: ISOLabel,
		ElTorito: &iso9660.ElTorito{
			BootCatalog: isolinuxDir + "/boot.cat",
			Entries:     []*iso9660.ElToritoEntry{bios, efi},
		},
	})
	if err != nil {
		return fmt.Errorf("writing ISO 9660: %w", err)
	}
	if err := fixISOTimes(b.f, b.sum.Time); err != nil {
		return fmt.Errorf("fixing ISO times: %w", err)
	}
	return nil
}

func (b *isoBuild) writeHybridMBR(ctx context.Context) error {
	code, err := os.ReadFile(b.sl.HybridMBR)
	if err != nil {
		return err
	}
	// drop whatever lies past the volume, then let isohybrid pad
	pvd := make([]byte, 2048)
	if _, err := b.f.ReadAt(pvd, 16*2048); err != nil {
		return err
	}
	volume := int64(uint32(pvd[80])|uint32(pvd[81])<<8|uint32(pvd[82])<<16|uint32(pvd[83])<<24) * 2048
	if err := b.f.Truncate(volume); err != nil {
		return err
	}
	res, err := isohybrid.Apply(b.f, isohybrid.Options{
		MBRCode:      code,
		DiskID:       deriveSerial(b.seed, "iso-mbr"),
		EFIImageSize: b.efiSize,
	})
	if err != nil {
		return err
	}
	b.sum.Size = res.Size
	b.sum.Partitions = []Partition{
		{Index: 1, Name: "iso", Type: "0x17", Offset: 0, Size: res.Size, Used: volume, Filesystem: "iso9660"},
		{Index: 2, Name: "efiboot", Type: "0xef", Offset: int64(res.EFILBA) * 2048, Size: int64(res.EFISectors) * 512, Used: b.efiSize, Filesystem: "vfat"},
	}
	return nil
}
