package disk

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"maps"
	"os"
	"slices"
	"syscall"
	"time"

	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/google/uuid"

	"kpaas.dev/appliance/builder/disk/internal/biosboot"
	"kpaas.dev/appliance/builder/disk/internal/fatfix"
	"kpaas.dev/appliance/builder/disk/qcow2"
	"kpaas.dev/appliance/builder/disk/squashfs"
	"kpaas.dev/appliance/internal/atomicfile"
	"kpaas.dev/appliance/internal/steps"
)

// namespace of the GUIDs derived from a seed (name-based, SHA-1, RFC 4122 §4.3).
var guidNamespace = uuid.MustParse("6b706161-732d-6170-706c-69616e636521")

func deriveGUID(seed, name string) string {
	return uuid.NewSHA1(guidNamespace, []byte(seed+"\x00"+name)).String()
}

func deriveSerial(seed, name string) uint32 {
	h := sha256.Sum256([]byte(seed + "\x00" + name))
	return binary.LittleEndian.Uint32(h[:4])
}

// WriteRaw writes l as a raw GPT disk image to out (see the package
// documentation for the partitions).
func WriteRaw(ctx context.Context, l Layout, out string, opts ...Option) (*Summary, error) {
	o := newOptions(opts)
	if err := errors.Join(l.validate(), o.syslinuxFiles().checkDisk()); err != nil {
		return nil, err
	}
	return writeAtomically(out, func(f *os.File) (*Summary, error) {
		return writeRaw(ctx, f, &l, o)
	})
}

// WriteQCOW2 writes l as a raw image next to out, converts it to qcow2 and
// removes the raw image.
func WriteQCOW2(ctx context.Context, l Layout, out string, opts ...Option) (*Summary, error) {
	o := newOptions(opts)
	if err := errors.Join(l.validate(), o.syslinuxFiles().checkDisk()); err != nil {
		return nil, err
	}
	rawPath := out + ".raw.tmp"
	defer os.Remove(rawPath)
	f, err := os.OpenFile(rawPath, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	sum, err := writeRaw(ctx, f, &l, o)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	start := time.Now()
	st, err := qcow2.ConvertFile(ctx, rawPath, out, qcow2.Options{Progress: o.report("qcow2")})
	if err != nil {
		return nil, err
	}
	sum.Steps = append(sum.Steps, Step{"qcow2", time.Since(start)})
	sum.Duration += time.Since(start)
	sum.Format, sum.Path, sum.Size = QCOW2, out, st.FileSize
	sum.Allocated = allocated(out)
	return sum, nil
}

// writeAtomically runs write on a temp file beside out and renames it to
// out when it succeeded (internal/atomicfile); otherwise it removes it.
func writeAtomically(out string, write func(*os.File) (*Summary, error)) (*Summary, error) {
	var sum *Summary
	err := atomicfile.Write(out, 0o644, func(f *os.File) (err error) {
		sum, err = write(f)
		return err
	})
	if err != nil {
		return nil, err
	}
	sum.Path = out
	sum.Allocated = allocated(out)
	return sum, nil
}

func allocated(p string) int64 {
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		return 0
	}
	return st.Blocks * 512
}

// rawBuild carries the state of one raw image through its steps.
type rawBuild struct {
	f   *os.File
	l   *Layout
	o   *options
	sum *Summary

	espFiles          map[string]Source
	bios              *biosBoot
	esp, rootA, rootB Partition
	bundle, state     Partition
	root, bund        placed
	size              int64
}

func writeRaw(ctx context.Context, f *os.File, l *Layout, o *options) (*Summary, error) {
	start := time.Now()
	b := &rawBuild{f: f, l: l, o: o, sum: &Summary{Format: Raw, Firmware: []Firmware{BIOS, UEFI}}}
	list := []steps.Step{
		{Name: "esp", Run: b.writeESP},       // FAT32 with the boot files (UEFI and BIOS) at 1 MiB
		{Name: "root", Run: b.writeRoot},     // squashfs of the root, B reserved after it
		{Name: "bundle", Run: b.writeBundle}, // squashfs of the bundle
		{Name: "gpt", Run: b.finish},         // sizes, identifiers, timestamps, partition table, BIOS boot code
	}
	r := &steps.Runner{Observe: func(e steps.Event) {
		if e.State == steps.Done {
			b.sum.Steps = append(b.sum.Steps, Step{e.Step, e.Duration})
		}
	}}
	if err := r.Run(ctx, list); err != nil {
		return nil, fmt.Errorf("raw image, %w", err) // "raw image, STEP: cause"
	}
	b.sum.Size = b.size
	b.sum.Duration = time.Since(start)
	return b.sum, nil
}

func (b *rawBuild) writeESP(ctx context.Context) error {
	bios, err := loadBIOSBoot(b.o.syslinuxFiles())
	if err != nil {
		return err
	}
	b.bios = bios
	b.espFiles = espFiles(b.l, nil)
	biosFiles, err := bios.files(b.l, b.espFiles)
	if err != nil {
		return err
	}
	maps.Copy(b.espFiles, biosFiles)
	need, err := filesBytes(b.espFiles)
	if err != nil {
		return err
	}
	size := b.l.Sizes.ESP
	if size == 0 {
		size = max(minESPSize, roundMiB(need+need/10+8*mib))
	}
	size = roundMiB(size)
	if size < need+2*mib {
		return fmt.Errorf("ESP of %d bytes %w: its files need %d bytes", size, ErrTooSmall, need+2*mib)
	}
	if size < 33*mib {
		return fmt.Errorf("ESP of %d bytes %w: FAT32 needs at least 33 MiB", size, ErrTooSmall)
	}
	b.esp = Partition{Index: 1, Name: NameESP, Type: TypeESP, Offset: mib, Size: size, Used: need, Filesystem: "vfat",
		Attributes: biosboot.AttrLegacyBIOSBootable}
	// timestamps and serial are fixed in finish, once the seed is known
	return writeFATUnfixed(b.f, b.esp.Offset, size, fat32Kind, NameESP, b.espFiles, b.o.report("esp"))
}

func (b *rawBuild) writeRoot(ctx context.Context) error {
	off := b.esp.Offset + b.esp.Size
	limit := roundMiB(b.l.Sizes.Root)
	p, err := placePayload(ctx, b.f, off, limit, "root", b.l.Root, squashfs.Zstd, b.o)
	if err != nil {
		return err
	}
	b.root = p
	size := limit
	if size == 0 {
		size = roundMiB(p.used + p.used/4)
	}
	b.rootA = Partition{Index: 2, Name: NameRootA, Type: TypeLinux, Offset: off, Size: size, Used: p.used, Filesystem: "squashfs"}
	b.rootB = Partition{Index: 3, Name: NameRootB, Type: TypeLinux, Offset: off + size, Size: size}
	return nil
}

func (b *rawBuild) writeBundle(ctx context.Context) error {
	off := b.rootB.Offset + b.rootB.Size
	limit := roundMiB(b.l.Sizes.Bundle)
	p, err := placePayload(ctx, b.f, off, limit, "bundle", b.l.Bundle, squashfs.None, b.o)
	if err != nil {
		return err
	}
	b.bund = p
	size := limit
	if size == 0 {
		size = roundMiB(p.used)
	}
	b.bundle = Partition{Index: 4, Name: NameBundle, Type: TypeLinux, Offset: off, Size: size, Used: p.used, Filesystem: "squashfs"}
	return nil
}

func (b *rawBuild) finish(ctx context.Context) error {
	stateSize := roundMiB(b.l.Sizes.State)
	if stateSize == 0 {
		stateSize = DefaultStateSize
	}
	b.state = Partition{Index: 5, Name: NameState, Type: TypeLinux, Offset: b.bundle.Offset + b.bundle.Size, Size: stateSize}
	need := b.state.Offset + b.state.Size + mib // + backup GPT
	b.size = need
	if d := b.l.Sizes.Disk; d > 0 {
		if d < need {
			return fmt.Errorf("disk of %d bytes %w: the layout needs %d bytes (%d MiB)", d, ErrTooSmall, need, (need+mib-1)/mib)
		}
		b.size = (d + 511) &^ 511
	}

	// the build time: given, or the newest input
	t := b.o.time
	if t.IsZero() {
		t = newestMtime(slices.Collect(maps.Values(b.espFiles))...)
		for _, p := range []placed{b.root, b.bund} {
			if p.mkfs.After(t) {
				t = p.mkfs
			}
		}
	}
	b.sum.Time = t

	seed := b.o.seed
	if seed == "" {
		h := seedHash()
		for _, p := range slices.Sorted(maps.Keys(b.espFiles)) {
			r, _, err := b.espFiles[p].open()
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
		for _, p := range []struct {
			part Partition
			pl   Payload
		}{{b.rootA, b.l.Root}, {b.bundle, b.l.Bundle}} {
			if err := b.hashPayload(h, p.part, p.pl); err != nil {
				return fmt.Errorf("%s: %w", p.part.Name, err)
			}
		}
		seed = hex.EncodeToString(h.Sum(nil))
	}

	if err := fatfix.Fix(b.f, b.esp.Offset, t, deriveSerial(seed, "esp-serial")); err != nil {
		return fmt.Errorf("finishing ESP: %w", err)
	}
	if err := b.bios.install(b.f, b.esp.Offset); err != nil {
		return fmt.Errorf("installing syslinux on the ESP: %w", err)
	}
	if err := b.f.Truncate(b.size); err != nil {
		return err
	}
	parts := []*Partition{&b.esp, &b.rootA, &b.rootB, &b.bundle, &b.state}
	table := &gpt.Table{
		LogicalSectorSize:  512,
		PhysicalSectorSize: 512,
		ProtectiveMBR:      true,
		GUID:               deriveGUID(seed, "disk"),
	}
	for _, p := range parts {
		p.GUID = deriveGUID(seed, p.Name)
		table.Partitions = append(table.Partitions, &gpt.Partition{
			Index: p.Index,
			Start: uint64(p.Offset / 512),
			End:   uint64((p.Offset+p.Size)/512 - 1),
			Size:  uint64(p.Size),
			Type:  gpt.Type(p.Type),
			Name:  p.Name,
			GUID:  p.GUID,
			// syslinux's MBR code boots the partition marked so
			Attributes: p.Attributes,
		})
		b.sum.Partitions = append(b.sum.Partitions, *p)
	}
	if err := table.Write(b.f, b.size); err != nil {
		return fmt.Errorf("writing partition table: %w", err)
	}
	if err := b.bios.writeMBR(b.f); err != nil {
		return fmt.Errorf("writing the MBR boot code: %w", err)
	}
	b.sum.DiskGUID = table.GUID
	return nil
}

// hashPayload feeds the identity of the squashfs in partition p to h: from
// the image itself when the payload was left out (planOnly).
func (b *rawBuild) hashPayload(h hash.Hash, p Partition, pl Payload) error {
	if !b.o.planOnly || pl.Image == "" {
		return hashSquashfs(h, b.f, p.Offset)
	}
	f, err := os.Open(pl.Image)
	if err != nil {
		return err
	}
	defer f.Close()
	return hashSquashfs(h, f, 0)
}
