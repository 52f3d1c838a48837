package disk

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"os"
	"path"
	"slices"
	"time"

	"github.com/diskfs/go-diskfs/partition/gpt"

	"kpaas.dev/appliance/internal/atomicfile"
)

// TypeBasicData is the GPT type of a FAT data partition that every OS
// mounts (Microsoft basic data).
const TypeBasicData = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"

// WriteFATDisk writes files into a small GPT disk image at out: one
// partition named name (at 1 MiB) holding a FAT16 file system labelled
// label. A FAT label holds at most 11 characters, so a disk is found by its
// GPT partition name (KPAAS-CONFIG, which earlyboot.Find matches);
// the label is for people. Keys of files are absolute paths inside the
// file system ("/cluster.yaml"). The file system is at least 8 MiB, the
// image sparse; out is written 0600 (its temp file too) and renamed into
// place, since a config disk carries secrets. Summary.Partitions has the one partition.
//
// Like the other writers it is reproducible: every timestamp is the time of
// WithTime (by default the newest input file's
// mtime), and the disk and partition GUIDs and the volume serial are
// derived from WithSeed (by default the content). `kpaas cluster
// config-disk` writes KPAAS-CONFIG disks with it.
func WriteFATDisk(ctx context.Context, out, name, label string, files map[string]Source, opts ...Option) (*Summary, error) {
	o := newOptions(opts)
	start := time.Now()
	if len(label) > 11 {
		return nil, fmt.Errorf("FAT label %q: longer than 11 characters", label)
	}
	for p := range files {
		if !path.IsAbs(p) || path.Clean(p) != p || p == "/" {
			return nil, fmt.Errorf("FAT disk: %q is not a clean absolute path", p)
		}
	}
	t := o.time
	if t.IsZero() {
		t = newestMtime(slices.Collect(maps.Values(files))...)
	}
	if t.Year() < 1980 {
		t = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC) // FAT's first day
	}
	seed := o.seed
	if seed == "" {
		h := sha256.New()
		fmt.Fprintf(h, "%s\x00%s\x00", name, label)
		for _, p := range slices.Sorted(maps.Keys(files)) {
			r, _, err := files[p].open()
			if err != nil {
				return nil, fmt.Errorf("FAT disk: %s: %w", p, err)
			}
			fmt.Fprintf(h, "%s\x00", p)
			_, err = io.Copy(h, r)
			r.Close()
			if err != nil {
				return nil, fmt.Errorf("FAT disk: %s: %w", p, err)
			}
		}
		seed = hex.EncodeToString(h.Sum(nil))
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	need, err := filesBytes(files)
	if err != nil {
		return nil, err
	}
	fatSize := max(8*mib, roundMiB(need+need/20+2*mib))
	if fatSize > 1<<30 {
		return nil, fmt.Errorf("FAT disk: %d bytes of files is more than it holds", need)
	}
	part := Partition{Index: 1, Name: name, Type: TypeBasicData, GUID: deriveGUID(seed, name),
		Offset: mib, Size: fatSize, Used: need, Filesystem: "vfat"}
	size := fatSize + 2*mib // the table before, its backup after

	table := &gpt.Table{
		LogicalSectorSize:  512,
		PhysicalSectorSize: 512,
		ProtectiveMBR:      true,
		GUID:               deriveGUID(seed, "disk"),
		Partitions: []*gpt.Partition{{
			Index: part.Index,
			Start: uint64(part.Offset / 512),
			End:   uint64((part.Offset+part.Size)/512 - 1),
			Size:  uint64(part.Size),
			Type:  gpt.Type(part.Type),
			Name:  part.Name,
			GUID:  part.GUID,
		}},
	}
	err = atomicfile.Write(out, 0o600, func(f *os.File) error {
		if err := f.Truncate(size); err != nil {
			return err
		}
		if err := writeFAT(f, part.Offset, part.Size, fat16Kind, label, files, t, deriveSerial(seed, "fat-serial"), o.report("fat")); err != nil {
			return err
		}
		if err := table.Write(f, size); err != nil {
			return fmt.Errorf("writing partition table: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("writing %s: %w", out, err)
	}
	sum := &Summary{Format: Raw, Path: out, Size: size, DiskGUID: table.GUID, Partitions: []Partition{part}, Time: t}
	for _, p := range slices.Sorted(maps.Keys(files)) {
		n, _ := files[p].size()
		sum.Files = append(sum.Files, File{Path: p, Size: n})
	}
	sum.Allocated = allocated(out)
	sum.Duration = time.Since(start)
	return sum, nil
}
