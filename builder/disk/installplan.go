package disk

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"kpaas.dev/appliance/builder/disk/internal/zero"
	"kpaas.dev/appliance/internal/diskplan"
)

// Paths of the install plan inside the ISO (internal/diskplan): the plan,
// and the blob of the raw image's bytes no other file of the ISO holds
// (partition tables, the ESP's FAT and small files).
const (
	ISOPlanPath = "/kpaas/install/plan.json"
	ISOPlanBlob = "/kpaas/install/disk.img"
)

const (
	sector = 512
	// wipe is how much of a blank partition (ROOT-B, STATE) an install
	// zeroes: enough to erase any file system signature of an old disk.
	wipe = mib
	// mergeGap: zeros shorter than this between data go into the blob,
	// so the plan does not splinter on the FAT's sparse tables.
	mergeGap = 64 << 10
)

// planFile is a file of the ISO whose bytes the raw image holds.
type planFile struct {
	iso  string // relative path in the ISO
	path string // the same bytes on the host
}

// installPlan writes, next to the staging folder, the raw image the ISO
// installs (payload images left out: holes), and describes it as a plan:
// the payload partitions refer to the ISO's root and bundle images, the
// kernel and initrd on the ESP to the ISO's copies, the rest of the ESP
// and the partition tables to a blob written to blobPath; the heads of
// KPAAS-ROOT-B and KPAAS-STATE are zeroed. Applying the plan to a blank
// file of DiskSize bytes gives the raw image WriteRaw writes.
func installPlan(ctx context.Context, l Layout, o *options, root, bundle planFile, files []planFile, scratch, blobPath string) (*diskplan.Plan, error) {
	ro := *o
	ro.planOnly, ro.progress = true, nil
	l.Root = Payload{Image: root.path}
	l.Bundle = Payload{Image: bundle.path}
	f, err := os.OpenFile(scratch, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	defer os.Remove(scratch)
	defer f.Close()
	sum, err := writeRaw(ctx, f, &l, &ro)
	if err != nil {
		return nil, fmt.Errorf("laying out the disk: %w", err)
	}
	part := map[string]Partition{}
	for _, p := range sum.Partitions {
		part[p.Name] = p
	}
	esp, rootA, rootB, bund, state := part[NameESP], part[NameRootA], part[NameRootB], part[NameBundle], part[NameState]

	plan := &diskplan.Plan{APIVersion: diskplan.APIVersion, Kind: diskplan.Kind,
		DiskSize: sum.Size, DiskGUID: sum.DiskGUID, StatePartition: state.Index}
	for _, pf := range []struct {
		p  Partition
		pf planFile
	}{{rootA, root}, {bund, bundle}} {
		digest, err := fileSHA256(pf.pf.path)
		if err != nil {
			return nil, err
		}
		plan.Extents = append(plan.Extents, diskplan.Extent{Offset: pf.p.Offset, Size: pf.p.Used, File: pf.pf.iso, SHA256: digest})
	}
	for _, p := range []Partition{rootB, state} {
		plan.Extents = append(plan.Extents, diskplan.Extent{Offset: p.Offset, Size: min(wipe, p.Size)})
	}

	blob, err := os.OpenFile(blobPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, err
	}
	bw := &blobWriter{w: blob}
	// The start of the disk to the end of the ESP, and the backup GPT.
	for _, r := range [][2]int64{{0, esp.Offset + esp.Size}, {state.Offset + state.Size, sum.Size}} {
		buf := make([]byte, r[1]-r[0])
		if _, err := f.ReadAt(buf, r[0]); err != nil && err != io.EOF {
			blob.Close()
			return nil, err
		}
		ext, err := describe(buf, r[0], files, bw)
		if err != nil {
			blob.Close()
			return nil, err
		}
		plan.Extents = append(plan.Extents, ext...)
	}
	if err := blob.Close(); err != nil {
		return nil, err
	}
	sortExtents(plan.Extents)
	if err := plan.Validate(); err != nil {
		return nil, fmt.Errorf("install plan: %w", err)
	}
	return plan, nil
}

// describe turns buf (the disk's bytes at base) into extents: files found
// whole in it (at a sector boundary) refer to the ISO's copy, non-zero
// sectors go into the blob, zero runs are zero extents.
func describe(buf []byte, base int64, files []planFile, bw *blobWriter) ([]diskplan.Extent, error) {
	var out []diskplan.Extent
	taken := make([]bool, (len(buf)+sector-1)/sector)
	for _, pf := range files {
		data, err := os.ReadFile(pf.path)
		if err != nil {
			return nil, err
		}
		at := findAligned(buf, data)
		if at < 0 || len(data) < mergeGap {
			continue // small or scattered: the blob takes it
		}
		sum := sha256.Sum256(data)
		out = append(out, diskplan.Extent{Offset: base + int64(at), Size: int64(len(data)), File: pf.iso, SHA256: hex.EncodeToString(sum[:])})
		// the file's last sector may be shared with what follows: keep it
		// for the blob unless the file fills it
		n := len(data) / sector
		for i := at / sector; i < at/sector+n; i++ {
			taken[i] = true
		}
		if rem := len(data) % sector; rem != 0 {
			out[len(out)-1].Size -= int64(rem)
			out[len(out)-1].SHA256 = hex.EncodeToString(sha(data[:len(data)-rem]))
		}
	}
	// runs of untaken sectors: data or zeros
	type run struct {
		start, end int // sectors
		zero       bool
	}
	var runs []run
	for i := 0; i < len(taken); i++ {
		if taken[i] {
			continue
		}
		lo, hi := i*sector, min((i+1)*sector, len(buf))
		z := zero.Is(buf[lo:hi])
		if n := len(runs); n > 0 && runs[n-1].end == i && runs[n-1].zero == z {
			runs[n-1].end = i + 1
			continue
		}
		runs = append(runs, run{i, i + 1, z})
	}
	// short zero runs between data join the data
	var merged []run
	for i, r := range runs {
		short := r.zero && (r.end-r.start)*sector < mergeGap && i > 0 && i < len(runs)-1 &&
			!runs[i-1].zero && !runs[i+1].zero && runs[i-1].end == r.start && r.end == runs[i+1].start
		if short {
			r.zero = false
		}
		if n := len(merged); n > 0 && merged[n-1].end == r.start && merged[n-1].zero == r.zero {
			merged[n-1].end = r.end
			continue
		}
		merged = append(merged, r)
	}
	for _, r := range merged {
		lo, hi := r.start*sector, min(r.end*sector, len(buf))
		e := diskplan.Extent{Offset: base + int64(lo), Size: int64(hi - lo)}
		if !r.zero {
			off, err := bw.add(buf[lo:hi])
			if err != nil {
				return nil, err
			}
			e.File, e.FileOffset, e.SHA256 = strings.TrimPrefix(ISOPlanBlob, "/"), off, hex.EncodeToString(sha(buf[lo:hi]))
		}
		out = append(out, e)
	}
	return out, nil
}

// findAligned finds data in buf at a sector boundary, or returns -1.
func findAligned(buf, data []byte) int {
	if len(data) == 0 {
		return -1
	}
	head := data[:min(len(data), 4096)]
	for from := 0; from < len(buf); {
		i := bytes.Index(buf[from:], head)
		if i < 0 {
			return -1
		}
		at := from + i
		if at%sector == 0 && at+len(data) <= len(buf) && bytes.Equal(buf[at:at+len(data)], data) {
			return at
		}
		from = at + 1
	}
	return -1
}

type blobWriter struct {
	w   io.Writer
	off int64
}

func (b *blobWriter) add(p []byte) (int64, error) {
	at := b.off
	n, err := b.w.Write(p)
	b.off += int64(n)
	return at, err
}

func sha(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h, _, err := v1.SHA256(f)
	return h.Hex, err
}

func sortExtents(e []diskplan.Extent) {
	slices.SortFunc(e, func(a, b diskplan.Extent) int { return cmp.Compare(a.Offset, b.Offset) })
}

// writePlan writes p as indented JSON.
func writePlan(p *diskplan.Plan, path string) error {
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
