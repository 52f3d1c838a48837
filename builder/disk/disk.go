// Package disk writes the boot media of a K-PaaS appliance: a raw GPT disk
// image, the same as qcow2, and a hybrid ISO (BIOS and UEFI, CD or USB
// stick). Everything is written as an ordinary user: no root, no loop
// devices, no mounts.
//
// A Layout names the content: boot files for the EFI system partition
// (kernel, initrd, boot loader and its entries), the OS root file system and
// the bundle, each a folder to pack as squashfs or a squashfs image made
// before. WriteRaw, WriteQCOW2 and WriteISO (or Write, by Format) turn it
// into one file; they write a temp file beside OUT (internal/atomicfile:
// .tmp-NAME-*) and rename it to OUT at the end, so a failed or cancelled
// build leaves nothing behind.
//
// The raw disk (docs/media.md has the picture):
//
//	1  EFI           FAT32, the ESP: Layout.ESP files + /kpaas/vmlinuz, /kpaas/initrd.img,
//	                 syslinux (/syslinux) for legacy BIOS; attribute legacy BIOS bootable
//	2  KPAAS-ROOT-A  squashfs of the OS root
//	3  KPAAS-ROOT-B  same size, left empty (A/B updates)
//	4  KPAAS-BUNDLE  squashfs of the bundle (OCI layout), stored once
//	5  KPAAS-STATE   small and blank; the node formats and grows it on first boot
//
// The disk boots under UEFI (the ESP's loader, e.g. systemd-boot) and
// under legacy BIOS: syslinux's GPT MBR code loads syslinux from the ESP,
// whose menu repeats the ESP's loader entries (BIOSMenu).
//
// Partitions start on 1 MiB boundaries; unused space is a hole in the file.
// Images are reproducible: the same inputs, seed and time give the same
// bytes (disk and partition GUIDs are derived from the seed, the FAT serial
// too, every timestamp is the build time).
//
// WriteFATDisk writes a small GPT disk with one named FAT partition: a
// node's config disk (`kpaas cluster config-disk`).
//
// Package squashfs packs folders, qcow2 converts raw images, isohybrid
// makes an ISO bootable from a disk; they can be used on their own.
package disk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"kpaas.dev/appliance/builder/disk/squashfs"
	"kpaas.dev/appliance/internal/names"
)

// Format is an output format.
type Format string

const (
	Raw   Format = "raw"
	QCOW2 Format = "qcow2"
	ISO   Format = "iso"
)

// Formats lists the supported formats.
var Formats = []Format{Raw, QCOW2, ISO}

// ParseFormat checks a format name.
func ParseFormat(s string) (Format, error) {
	for _, f := range Formats {
		if string(f) == s {
			return f, nil
		}
	}
	return "", fmt.Errorf("unsupported image format %q (want raw, qcow2 or iso)", s)
}

// Partition names (GPT names; the ESP's FAT label is EFI too): the names
// of internal/names, which kpaas-init looks for.
const (
	NameESP    = names.PartESP
	NameRootA  = names.PartRootA
	NameRootB  = names.PartRootB
	NameBundle = names.PartBundle
	NameState  = names.PartState
	// ISOLabel is the ISO 9660 volume identifier.
	ISOLabel = names.ISOLabel
)

// Partition type GUIDs.
const (
	TypeESP   = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" // EFI system partition
	TypeLinux = "0FC63DAF-8483-4772-8E79-3D69D8477DE4" // Linux filesystem data (root, bundle, state)
)

// Paths of the boot files on the ESP and on the ISO.
const (
	KernelPath = names.KernelPath
	InitrdPath = names.InitrdPath
)

const (
	mib = int64(1) << 20
	// DefaultStateSize is the blank state partition: a placeholder that
	// the node's first boot formats and grows to the end of the disk.
	DefaultStateSize = 16 * mib
	minESPSize       = 64 * mib
)

// Source is the content of one file: a file on the host or bytes.
type Source struct {
	path string
	data []byte
	set  bool
}

// FromFile is the content of the host file at path, read when the image is written.
func FromFile(path string) Source { return Source{path: path, set: true} }

// FromBytes is the content b.
func FromBytes(b []byte) Source { return Source{data: b, set: true} }

// IsZero reports whether s is unset.
func (s Source) IsZero() bool { return !s.set }

func (s Source) String() string {
	if s.path != "" {
		return s.path
	}
	return fmt.Sprintf("%d bytes", len(s.data))
}

func (s Source) open() (io.ReadCloser, int64, error) {
	if s.path == "" {
		return io.NopCloser(bytes.NewReader(s.data)), int64(len(s.data)), nil
	}
	f, err := os.Open(s.path)
	if err != nil {
		return nil, 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, 0, fmt.Errorf("%s is not a regular file", s.path)
	}
	return f, fi.Size(), nil
}

func (s Source) size() (int64, error) {
	if s.path == "" {
		return int64(len(s.data)), nil
	}
	fi, err := os.Stat(s.path)
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// Payload is a read-only file system for a partition or the ISO: either a
// folder, packed as squashfs while the image is written, or a squashfs
// image made before (e.g. once, for several formats).
type Payload struct {
	Dir   string
	Image string
	// Squashfs options for Dir. The root defaults to zstd, the bundle to
	// None (its blobs are compressed already); ModTime defaults to the
	// build time.
	Squashfs squashfs.Options
}

// IsZero reports whether p is unset.
func (p Payload) IsZero() bool { return p.Dir == "" && p.Image == "" }

func (p Payload) String() string {
	if p.Image != "" {
		return p.Image
	}
	return p.Dir
}

// Sizes of the partitions and the disk, in bytes; 0 picks a default. Sizes
// are rounded up to whole MiB.
type Sizes struct {
	ESP    int64 // default: the files + 10% + 8 MiB, at least 64 MiB
	Root   int64 // default: the root image + 25% (room for a bigger update in B)
	Bundle int64 // default: the bundle image
	State  int64 // default: DefaultStateSize
	Disk   int64 // default: just large enough; larger leaves room for STATE to grow
}

// Layout is what goes on the media.
type Layout struct {
	Kernel Source // KernelPath on the ESP and the ISO
	Initrd Source // InitrdPath on the ESP and the ISO
	// ESP holds the other files of the EFI system partition by absolute
	// path, e.g. /EFI/BOOT/BOOTX64.EFI, /loader/loader.conf,
	// /loader/entries/kpaas.conf. They also go into the ISO's EFI image.
	ESP map[string]Source
	// ISOESP adds or replaces files of the ISO's EFI image, e.g. loader
	// entries for "live" and "install".
	ISOESP map[string]Source
	Root   Payload // the OS root file system
	Bundle Payload // the bundle (an OCI image layout folder)
	Sizes  Sizes
	// Cmdline is the kernel command line of the ISO's isolinux entries
	// (UEFI entries live in the loader entries of ESP/ISOESP).
	Cmdline string
	// ISOInstall is the target of the ISO's isolinux "install" entry
	// (kpaas.install=; default auto, the only empty disk).
	ISOInstall string
	// ISOInstallDefault makes "install" the isolinux default: an
	// unattended installer.
	ISOInstallDefault bool
}

// Errors callers can branch on (wrapped, with details).
var (
	ErrTooSmall = errors.New("too small for the payload")
	ErrInvalid  = errors.New("invalid layout")
)

// Progress is one report of a long step.
type Progress struct {
	Phase       string // esp, root, bundle, gpt, qcow2, iso, efiboot
	Done, Total int64  // bytes
}

// Option configures a write.
type Option func(*options)

type options struct {
	seed     string
	time     time.Time
	progress func(Progress)
	syslinux *Syslinux
	keepTmp  bool
	// planOnly: the raw writer leaves the payload images out (holes), for
	// the install plan, which refers to them instead.
	planOnly bool
}

// WithSeed sets the seed the disk, partition and volume identifiers are
// derived from. By default it is derived from the content.
func WithSeed(seed string) Option { return func(o *options) { o.seed = seed } }

// WithTime sets the one timestamp written everywhere (FAT entries, squashfs
// mkfs time, clamp of file mtimes). By default it is the newest mtime of
// the inputs. The package does not read the environment: the CLI passes
// SOURCE_DATE_EPOCH here.
func WithTime(t time.Time) Option { return func(o *options) { o.time = t } }

// WithProgress sets a callback for the bytes written by long steps.
func WithProgress(fn func(Progress)) Option { return func(o *options) { o.progress = fn } }

// WithSyslinux sets the syslinux files for the ISO and the raw disk's BIOS
// boot; by default (and for fields left empty) they are found where
// Debian's isolinux, syslinux-common and syslinux packages put them.
func WithSyslinux(s Syslinux) Option { return func(o *options) { o.syslinux = &s } }

func (o *options) syslinuxFiles() Syslinux {
	if o.syslinux == nil {
		return defaultSyslinux
	}
	return o.syslinux.withDefaults()
}

func newOptions(opts []Option) *options {
	o := &options{}
	for _, fn := range opts {
		fn(o)
	}
	return o
}

func (o *options) report(phase string) func(done, total int64) {
	if o.progress == nil {
		return nil
	}
	return func(done, total int64) { o.progress(Progress{Phase: phase, Done: done, Total: total}) }
}

// Summary describes a written image.
type Summary struct {
	Format    Format `json:"format"`
	Path      string `json:"path"`
	Size      int64  `json:"size"`      // apparent file size
	Allocated int64  `json:"allocated"` // bytes the file occupies on disk (holes excluded)
	DiskGUID  string `json:"diskGUID,omitempty"`
	// Firmware is what the output boots under: raw and qcow2 disks and
	// the ISO boot under legacy BIOS and UEFI.
	Firmware   []Firmware      `json:"firmware"`
	Partitions []Partition     `json:"partitions,omitempty"`
	Files      []File          `json:"files,omitempty"`   // ISO: the files of the image
	Install    *InstallSummary `json:"install,omitempty"` // ISO: the disk its install entry writes
	Time       time.Time       `json:"time"`
	Steps      []Step          `json:"steps"`
	Duration   time.Duration   `json:"durationNs"`
}

// Partition describes one partition of a raw or qcow2 image.
type Partition struct {
	Index      int    `json:"index"`
	Name       string `json:"name"`
	Type       string `json:"type"` // type GUID
	GUID       string `json:"guid"`
	Offset     int64  `json:"offset"`
	Size       int64  `json:"size"`
	Used       int64  `json:"used"`       // bytes of content
	Filesystem string `json:"filesystem"` // vfat, squashfs, or "" (blank)
	// Attributes are the GPT attribute bits: the ESP is legacy BIOS
	// bootable (bit 2).
	Attributes uint64 `json:"attributes,omitempty"`
}

// InstallSummary describes the ISO's install plan.
type InstallSummary struct {
	DiskSize int64  `json:"diskSize"` // the least target disk size
	DiskGUID string `json:"diskGUID"`
	Extents  int    `json:"extents"`
	Bytes    int64  `json:"bytes"` // written by an install
}

// File is one file of an ISO.
type File struct {
	Path string `json:"path"`
	Size int64  `json:"size"`
}

// Step is one timed step of a write.
type Step struct {
	Name     string        `json:"name"`
	Duration time.Duration `json:"durationNs"`
}

// Write writes l in format f to out.
func Write(ctx context.Context, f Format, l Layout, out string, opts ...Option) (*Summary, error) {
	switch f {
	case Raw:
		return WriteRaw(ctx, l, out, opts...)
	case QCOW2:
		return WriteQCOW2(ctx, l, out, opts...)
	case ISO:
		return WriteISO(ctx, l, out, opts...)
	}
	_, err := ParseFormat(string(f))
	return nil, err
}

// validate reports every problem of l at once.
func (l *Layout) validate() error {
	var errs []error
	check := func(what string, s Source) {
		if s.IsZero() {
			errs = append(errs, fmt.Errorf("%s: not set", what))
			return
		}
		if s.path != "" {
			if fi, err := os.Stat(s.path); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", what, err))
			} else if !fi.Mode().IsRegular() {
				errs = append(errs, fmt.Errorf("%s: %s is not a regular file", what, s.path))
			}
		}
	}
	check("kernel", l.Kernel)
	check("initrd", l.Initrd)
	for _, m := range []map[string]Source{l.ESP, l.ISOESP} {
		for p, s := range m {
			if len(p) < 2 || p[0] != '/' {
				errs = append(errs, fmt.Errorf("ESP file %q: want an absolute path like /EFI/BOOT/BOOTX64.EFI", p))
			}
			check("ESP file "+p, s)
		}
	}
	payload := func(what string, p Payload) {
		switch {
		case p.IsZero():
			errs = append(errs, fmt.Errorf("%s: neither a folder nor an image set", what))
		case p.Dir != "" && p.Image != "":
			errs = append(errs, fmt.Errorf("%s: both a folder and an image set", what))
		case p.Dir != "":
			if fi, err := os.Stat(p.Dir); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", what, err))
			} else if !fi.IsDir() {
				errs = append(errs, fmt.Errorf("%s: %s is not a folder", what, p.Dir))
			}
		default:
			if err := checkSquashfs(p.Image); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", what, err))
			}
		}
	}
	payload("root", l.Root)
	payload("bundle", l.Bundle)
	for _, s := range []struct {
		what string
		n    int64
	}{{"ESP size", l.Sizes.ESP}, {"root size", l.Sizes.Root}, {"bundle size", l.Sizes.Bundle}, {"state size", l.Sizes.State}, {"disk size", l.Sizes.Disk}} {
		if s.n < 0 {
			errs = append(errs, fmt.Errorf("%s %d is negative", s.what, s.n))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrInvalid, errors.Join(errs...))
	}
	return nil
}

func roundMiB(n int64) int64 { return (n + mib - 1) / mib * mib }
