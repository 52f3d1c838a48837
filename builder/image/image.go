// Package image writes the boot media of a K-PaaS appliance from a bundle:
// `kpaas image build`. It opens and verifies the bundle, reads its OS image
// (the entry of kind "os": an OCI image whose layers are the root file
// system), assembles the root squashfs straight from those layers and the
// bundle's node files (file artifacts with a target: kubelet, containerd,
// …), takes the kernel, the initramfs and systemd-boot out of them, and
// hands a disk.Layout to builder/disk for each format (raw, qcow2, ISO).
//
// Build is a literal list of steps (see Build). Outputs appear only when
// every format is written: they are made in a work folder beside the
// output and renamed into place at the end, so a failed build leaves
// nothing behind. Two builds of the same bundle and options give
// byte-identical raw and qcow2 images.
package image

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"kpaas.dev/appliance/builder/disk"
	"kpaas.dev/appliance/builder/disk/squashfs"
	"kpaas.dev/appliance/internal/bundle"
	"kpaas.dev/appliance/internal/names"
	"kpaas.dev/appliance/internal/progress"
	"kpaas.dev/appliance/internal/steps"
)

// Paths inside the OS image (relative to its root) that the media use.
const (
	SystemdBootPath = "usr/lib/systemd/boot/efi/systemd-bootx64.efi"
	isolinuxBin     = "usr/lib/ISOLINUX/isolinux.bin"
	isohdpfxBin     = "usr/lib/ISOLINUX/isohdpfx.bin"
	ldlinuxC32      = "usr/lib/syslinux/modules/bios/ldlinux.c32"
	gptmbrBin       = "usr/lib/syslinux/mbr/gptmbr.bin" // syslinux-common: the raw disk's MBR code
	syslinuxBin     = "usr/bin/syslinux"                // syslinux: the installer holding the disk's BIOS boot core
)

// Paths on the ESP (and in the ISO's EFI image).
const (
	BootLoaderPath = "/EFI/BOOT/BOOTX64.EFI"
	LoaderConfPath = "/loader/loader.conf"
	EntryPath      = "/loader/entries/kpaas.conf"
	InstallPath    = "/loader/entries/kpaas-install.conf"
	// ConfigPath is where the cluster configuration (--config) goes.
	ConfigPath = "/" + names.ESPConfig
	// PublicKeyPath is where the bundle's public key (--key) goes: the
	// node's agent refuses a bundle it does not verify.
	PublicKeyPath = "/" + names.ESPPublicKey
)

// Options configure Build. The CLI maps its flags onto them.
type Options struct {
	Bundle  string        // the bundle folder
	Formats []disk.Format // raw, qcow2, iso (default raw)
	// Out is the output path without extension: OUT.raw, OUT.qcow2, OUT.iso.
	Out string
	// Config is a cluster configuration file put on the ESP at ConfigPath.
	Config string
	// PublicKey, when set, must verify the bundle's signature; it is put
	// on the ESP at PublicKeyPath for the node's agent.
	PublicKey ed25519.PublicKey
	// DiskSize is the raw/qcow2 disk size (0: just large enough); the
	// space after the layout is left for KPAAS-STATE to grow into.
	DiskSize int64
	// KeepOSLayers stores the OS image's layer blobs and the blobs of the
	// node files put into the root in KPAAS-BUNDLE too. By default they
	// are left out: the root squashfs holds their content.
	KeepOSLayers bool
	// Cmdline is appended to the OS image's kernel command line.
	Cmdline string
	// Install makes the ISO an unattended installer: its default entry
	// installs onto this disk ("auto": the only empty disk, or a device
	// such as /dev/sda). Empty: the ISO runs live by default and offers
	// "install" (auto) in its menus.
	Install string
	// Time is the one timestamp of the media. Zero (the default): the OS
	// image's creation time, else the Unix epoch. `kpaas image build` sets
	// it from SOURCE_DATE_EPOCH; the library does not read the environment.
	Time time.Time
	// Seed derives the disk identifiers (default: from the content).
	Seed string
	// Progress receives the phase lines (default: discarded).
	Progress *progress.Reporter
}

// Summary is what Build wrote.
type Summary struct {
	Bundle        string        `json:"bundle"`
	OS            string        `json:"os"`       // the OS image's reference
	OSDigest      string        `json:"osDigest"` // its manifest digest
	KernelRelease string        `json:"kernelRelease,omitempty"`
	Cmdline       string        `json:"cmdline"` // of the disk's boot entry
	Time          time.Time     `json:"time"`
	Root          RootSummary   `json:"root"`
	NodeFiles     []NodeFile    `json:"nodeFiles,omitempty"`     // file artifacts put into the root
	NoTargetFiles []string      `json:"noTargetFiles,omitempty"` // file artifacts without a target: not in the root
	BundleOmitted []string      `json:"bundleOmitted,omitempty"` // blobs left out of KPAAS-BUNDLE
	OmittedBytes  int64         `json:"omittedBytes,omitempty"`
	Outputs       []Output      `json:"outputs"`
	Steps         []disk.Step   `json:"steps"`
	Duration      time.Duration `json:"duration"`
}

// RootSummary describes the root squashfs.
type RootSummary struct {
	Size       int64 `json:"size"`
	Inodes     int   `json:"inodes"`
	Files      int   `json:"files"`
	InputBytes int64 `json:"inputBytes"`
}

// Output is one written image.
type Output struct {
	Format    disk.Format `json:"format"`
	Path      string      `json:"path"`
	Size      int64       `json:"size"`
	Allocated int64       `json:"allocated"`
	DiskGUID  string      `json:"diskGUID,omitempty"`
	// Firmware is what the output boots under (bios, uefi).
	Firmware   []disk.Firmware  `json:"firmware"`
	Partitions []disk.Partition `json:"partitions,omitempty"`
	// Install is the disk the ISO's install entry writes.
	Install  *disk.InstallSummary `json:"install,omitempty"`
	Duration time.Duration        `json:"duration"`
}

// ErrNoOS is returned (wrapped) for a bundle without an OS image.
var ErrNoOS = errors.New("no OS image")

// Build writes the media o asks for.
func Build(ctx context.Context, o Options) (*Summary, error) {
	start := time.Now()
	if err := o.check(); err != nil {
		return nil, err
	}
	if o.Progress == nil {
		o.Progress = progress.Discard()
	}
	work, err := os.MkdirTemp(filepath.Dir(o.Out), "."+filepath.Base(o.Out)+".work-")
	if err != nil {
		return nil, err
	}
	b := &build{o: o, work: work, sum: &Summary{Bundle: o.Bundle}}
	defer b.cleanup()

	list := []steps.Step{
		{Name: "verify", Run: b.verify},     // every blob's digest, SHA256SUMS, the signature
		{Name: "os", Run: b.findOS},         // the os entry, its manifest and annotations
		{Name: "layers", Run: b.readLayers}, // the OS image's layers applied in memory (verified reads)
		{Name: "files", Run: b.nodeFiles},   // the bundle's node files (kubelet, containerd, …) at their targets
		{Name: "boot", Run: b.bootFiles},    // kernel, initramfs, systemd-boot, loader entries, config
		{Name: "squashfs", Run: b.rootFS},   // the root squashfs, once for every format
		{Name: "bundle", Run: b.bundleSet},  // what KPAAS-BUNDLE holds
	}
	for _, f := range o.Formats {
		list = append(list, steps.Step{Name: string(f), Run: func(ctx context.Context) error { return b.write(ctx, f) }})
	}
	list = append(list, steps.Step{Name: "publish", Run: b.publish}) // rename the outputs into place, together

	r := &steps.Runner{Progress: o.Progress, Observe: func(e steps.Event) {
		if e.State == steps.Done {
			b.sum.Steps = append(b.sum.Steps, disk.Step{Name: e.Step, Duration: e.Duration})
		}
	}}
	if err := r.Run(ctx, list); err != nil {
		// the *steps.StepError reads "STEP: cause"
		return nil, fmt.Errorf("image build, %w", err)
	}
	b.sum.Duration = time.Since(start)
	return b.sum, nil
}

// check reports every problem of the options at once, before any work.
func (o *Options) check() error {
	var errs []error
	if o.Bundle == "" {
		errs = append(errs, errors.New("no bundle folder given"))
	}
	if o.Out == "" {
		errs = append(errs, errors.New("no output path given"))
	} else if fi, err := os.Stat(filepath.Dir(o.Out)); err != nil || !fi.IsDir() {
		errs = append(errs, fmt.Errorf("output folder %s does not exist", filepath.Dir(o.Out)))
	}
	if len(o.Formats) == 0 {
		o.Formats = []disk.Format{disk.Raw}
	}
	seen := map[disk.Format]bool{}
	for _, f := range o.Formats {
		if _, err := disk.ParseFormat(string(f)); err != nil {
			errs = append(errs, err)
		}
		seen[f] = true
	}
	// canonical order: qcow2 is converted from the raw image when both are wanted
	o.Formats = slices.DeleteFunc(slices.Clone(disk.Formats), func(f disk.Format) bool { return !seen[f] })
	if o.Config != "" {
		if fi, err := os.Stat(o.Config); err != nil {
			errs = append(errs, fmt.Errorf("config: %w", err))
		} else if !fi.Mode().IsRegular() {
			errs = append(errs, fmt.Errorf("config: %s is not a regular file", o.Config))
		}
	}
	if o.Install != "" && o.Install != "auto" && !strings.HasPrefix(o.Install, "/dev/") {
		errs = append(errs, fmt.Errorf("install target %q: want auto or a disk such as /dev/sda", o.Install))
	}
	if o.DiskSize < 0 {
		errs = append(errs, fmt.Errorf("disk size %d is negative", o.DiskSize))
	}
	return errors.Join(errs...)
}

// OutputPath is where a format is written: OUT.raw, OUT.qcow2, OUT.iso.
func OutputPath(out string, f disk.Format) string { return out + "." + string(f) }

// build carries the state of one Build through its steps.
type build struct {
	o    Options
	work string // temporary folder beside the output
	sum  *Summary

	store    *bundle.Store
	osEntry  bundle.Entry
	manifest *osManifest
	tree     *squashfs.Tree
	time     time.Time
	layout   disk.Layout
	syslinux *disk.Syslinux
	keep     map[string]bool // bundle paths that go to KPAAS-BUNDLE
	outputs  []Output        // written into work, not yet published
}

func (b *build) cleanup() {
	if b.tree != nil {
		b.tree.Close()
	}
	os.RemoveAll(b.work)
}

func (b *build) path(name string) string { return filepath.Join(b.work, name) }

// buildTime is Options.Time, the image's creation time or the epoch, in
// that order.
func (b *build) buildTime() time.Time {
	if !b.o.Time.IsZero() {
		return b.o.Time.UTC()
	}
	if t, err := time.Parse(time.RFC3339, b.manifest.annotations["org.opencontainers.image.created"]); err == nil {
		return t.UTC()
	}
	return time.Unix(0, 0).UTC()
}
