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

	"kpaas.dev/appliance/internal/diskplan"
	"kpaas.dev/appliance/internal/zero"
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
	// The start of the disk to the end of the ESP (where the kernel and
	// initrd are), and the backup GPT.
	for _, r := range []struct {
		lo, hi int64
		files  []planFile
	}{{0, esp.Offset + esp.Size, files}, {state.Offset + state.Size, sum.Size, nil}} {
		ext, err := describe(f, r.lo, r.hi, r.files, bw)
		if err != nil {
			blob.Close()
			return nil, err
		}
		plan.Extents = append(plan.Extents, ext...)
	}
	if err := blob.Close(); err != nil {
		return nil, err
	}
	slices.SortFunc(plan.Extents, func(a, b diskplan.Extent) int { return cmp.Compare(a.Offset, b.Offset) })
	if err := plan.Validate(); err != nil {
		return nil, fmt.Errorf("install plan: %w", err)
	}
	return plan, nil
}

// describe turns the disk's bytes from lo to hi (sector-aligned) into
// extents: files found whole there (at a sector boundary) refer to the
// ISO's copy, non-zero sectors go into the blob, zero runs are zero
// extents. It reads the disk a chunk at a time.
func describe(r io.ReaderAt, lo, hi int64, files []planFile, bw *blobWriter) ([]diskplan.Extent, error) {
	var out []diskplan.Extent
	taken := make([]bool, (hi-lo+sector-1)/sector)
	for _, pf := range files {
		e, ok, err := findFile(r, lo, hi, pf)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue // small or scattered: the blob takes it
		}
		for i := (e.Offset - lo) / sector; i < (e.End()-lo)/sector; i++ {
			taken[i] = true
		}
		out = append(out, e)
	}
	// runs of untaken sectors: data or zeros
	type run struct {
		start, end int64 // sectors
		zero       bool
	}
	var runs []run
	buf := make([]byte, mib)
	for off := lo; off < hi; off += mib {
		n := min(mib, hi-off)
		if err := readFull(r, buf[:n], off); err != nil {
			return nil, err
		}
		for s := int64(0); s < n; s += sector {
			i := (off - lo + s) / sector
			if taken[i] {
				continue
			}
			z := zero.Is(buf[s:min(s+sector, n)])
			if k := len(runs); k > 0 && runs[k-1].end == i && runs[k-1].zero == z {
				runs[k-1].end = i + 1
				continue
			}
			runs = append(runs, run{i, i + 1, z})
		}
	}
	// short zero runs between data join the data
	var merged []run
	for i, r := range runs {
		short := r.zero && (r.end-r.start)*sector < mergeGap && i > 0 && i < len(runs)-1 &&
			!runs[i-1].zero && !runs[i+1].zero && runs[i-1].end == r.start && r.end == runs[i+1].start
		if short {
			r.zero = false
		}
		if k := len(merged); k > 0 && merged[k-1].end == r.start && merged[k-1].zero == r.zero {
			merged[k-1].end = r.end
			continue
		}
		merged = append(merged, r)
	}
	for _, m := range merged {
		from, to := lo+m.start*sector, min(lo+m.end*sector, hi)
		e := diskplan.Extent{Offset: from, Size: to - from}
		if !m.zero {
			h := sha256.New()
			e.File, e.FileOffset = strings.TrimPrefix(ISOPlanBlob, "/"), bw.off
			w := io.MultiWriter(h, bw)
			for at := from; at < to; at += mib {
				n := min(mib, to-at)
				if err := readFull(r, buf[:n], at); err != nil {
					return nil, err
				}
				if _, err := w.Write(buf[:n]); err != nil {
					return nil, err
				}
			}
			e.SHA256 = hex.EncodeToString(h.Sum(nil))
		}
		out = append(out, e)
	}
	return out, nil
}

// findFile looks for the file pf, whole, at a sector boundary between lo
// and hi of r. The extent it returns covers the file's whole sectors: a
// last partial sector may share its bytes with what follows, so the blob
// keeps it. Files smaller than mergeGap are not looked for.
func findFile(r io.ReaderAt, lo, hi int64, pf planFile) (diskplan.Extent, bool, error) {
	src, err := os.Open(pf.path)
	if err != nil {
		return diskplan.Extent{}, false, err
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return diskplan.Extent{}, false, err
	}
	size := fi.Size()
	if size < mergeGap {
		return diskplan.Extent{}, false, nil
	}
	head := make([]byte, sector)
	if err := readFull(src, head, 0); err != nil {
		return diskplan.Extent{}, false, err
	}
	buf := make([]byte, mib)
	for off := lo; off+size <= hi; off += mib {
		n := min(mib, hi-off)
		if err := readFull(r, buf[:n], off); err != nil {
			return diskplan.Extent{}, false, err
		}
		for s := int64(0); s+sector <= n && off+s+size <= hi; s += sector {
			if !bytes.Equal(buf[s:s+sector], head) {
				continue
			}
			whole := size - size%sector
			digest, same, err := compareAt(r, off+s, src, size, whole)
			if err != nil {
				return diskplan.Extent{}, false, err
			}
			if same {
				return diskplan.Extent{Offset: off + s, Size: whole, File: pf.iso, SHA256: digest}, true, nil
			}
		}
	}
	return diskplan.Extent{}, false, nil
}

// compareAt reports whether the size bytes of src are at off in r, and
// the SHA-256 of their first whole bytes.
func compareAt(r io.ReaderAt, off int64, src io.ReaderAt, size, whole int64) (string, bool, error) {
	a, b := make([]byte, mib), make([]byte, mib)
	h := sha256.New()
	for pos := int64(0); pos < size; pos += mib {
		n := min(mib, size-pos)
		if err := readFull(r, a[:n], off+pos); err != nil {
			return "", false, err
		}
		if err := readFull(src, b[:n], pos); err != nil {
			return "", false, err
		}
		if !bytes.Equal(a[:n], b[:n]) {
			return "", false, nil
		}
		if pos < whole {
			h.Write(b[:min(n, whole-pos)])
		}
	}
	return hex.EncodeToString(h.Sum(nil)), true, nil
}

// blobWriter appends to the plan's blob and knows its length.
type blobWriter struct {
	w   io.Writer
	off int64
}

func (b *blobWriter) Write(p []byte) (int, error) {
	n, err := b.w.Write(p)
	b.off += int64(n)
	return n, err
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

// writePlan writes p as indented JSON.
func writePlan(p *diskplan.Plan, path string) error {
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
