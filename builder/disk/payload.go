package disk

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"time"

	"kpaas.dev/appliance/builder/disk/squashfs"
	"kpaas.dev/appliance/internal/zero"
)

// squashInfo is what we need from a squashfs superblock.
type squashInfo struct {
	bytesUsed  int64
	mkfsTime   time.Time
	inodeStart int64
}

func readSquashInfo(r io.ReaderAt, off int64) (squashInfo, error) {
	sb := make([]byte, 96)
	if _, err := r.ReadAt(sb, off); err != nil {
		return squashInfo{}, err
	}
	le := binary.LittleEndian
	if le.Uint32(sb) != 0x73717368 || le.Uint16(sb[28:]) != 4 {
		return squashInfo{}, errors.New("not a squashfs 4.0 image")
	}
	return squashInfo{
		bytesUsed:  int64(le.Uint64(sb[40:])),
		mkfsTime:   time.Unix(int64(le.Uint32(sb[8:])), 0).UTC(),
		inodeStart: int64(le.Uint64(sb[64:])),
	}, nil
}

func checkSquashfs(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := readSquashInfo(f, 0); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// hashSquashfs feeds a squashfs image's identity to h: its superblock and
// metadata tables (names, sizes, modes, block lists), not the data blocks.
// Cheap, and different whenever the tree differs in any way that matters
// for an identifier.
func hashSquashfs(h hash.Hash, r io.ReaderAt, off int64) error {
	si, err := readSquashInfo(r, off)
	if err != nil {
		return err
	}
	sb := make([]byte, 96)
	if _, err := r.ReadAt(sb, off); err != nil {
		return err
	}
	h.Write(sb)
	_, err = io.Copy(h, io.NewSectionReader(r, off+si.inodeStart, si.bytesUsed-si.inodeStart))
	return err
}

// placed is a payload written somewhere.
type placed struct {
	used    int64
	mkfs    time.Time
	packed  bool
	squash  squashfs.Stats
	elapsed time.Duration
}

// placePayload writes p at byte off of f, in at most limit bytes (0: no
// limit). A folder is packed in place; an image is copied, skipping zeros.
func placePayload(ctx context.Context, f *os.File, off, limit int64, what string, p Payload, defComp squashfs.Compression, o *options) (placed, error) {
	start := time.Now()
	if p.Dir != "" {
		so := p.Squashfs
		if so.Compression == "" {
			so.Compression = defComp
		}
		if so.ModTime.IsZero() {
			so.ModTime = o.time
		}
		if so.MaxSize == 0 {
			so.MaxSize = limit
		}
		so.Progress = o.report(what)
		st, err := squashfs.Write(ctx, io.NewOffsetWriter(f, off), p.Dir, so)
		if errors.Is(err, squashfs.ErrTooLarge) {
			return placed{}, fmt.Errorf("%s: partition of %d bytes %w (%s)", what, limit, ErrTooSmall, err)
		}
		if err != nil {
			return placed{}, fmt.Errorf("packing %s %s: %w", what, p.Dir, err)
		}
		return placed{used: st.Size, mkfs: st.ModTime, packed: true, squash: st, elapsed: time.Since(start)}, nil
	}
	src, err := os.Open(p.Image)
	if err != nil {
		return placed{}, err
	}
	defer src.Close()
	si, err := readSquashInfo(src, 0)
	if err != nil {
		return placed{}, fmt.Errorf("%s: %s: %w", what, p.Image, err)
	}
	fi, err := src.Stat()
	if err != nil {
		return placed{}, err
	}
	n := fi.Size()
	if limit > 0 && n > limit {
		return placed{}, fmt.Errorf("%s: image %s is %d bytes, partition of %d bytes %w", what, p.Image, n, limit, ErrTooSmall)
	}
	if o.planOnly {
		// a plan needs where the image goes, not its bytes
		return placed{used: n, mkfs: si.mkfsTime, elapsed: time.Since(start)}, nil
	}
	if err := copySparse(ctx, f, off, src, n, o.report(what)); err != nil {
		return placed{}, fmt.Errorf("copying %s image %s: %w", what, p.Image, err)
	}
	return placed{used: n, mkfs: si.mkfsTime, elapsed: time.Since(start)}, nil
}

// copySparse copies n bytes of src to dst at off, 1 MiB at a time, and
// skips (seeks over) every all-zero chunk: the destination is a fresh
// sparse file, so zeros need not be written.
func copySparse(ctx context.Context, dst io.WriterAt, off int64, src io.ReaderAt, n int64, progress func(done, total int64)) error {
	buf := make([]byte, mib)
	for pos := int64(0); pos < n; {
		if err := ctx.Err(); err != nil {
			return err
		}
		c := min(int64(len(buf)), n-pos)
		if _, err := src.ReadAt(buf[:c], pos); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		if !zero.Is(buf[:c]) {
			if _, err := dst.WriteAt(buf[:c], off+pos); err != nil {
				return err
			}
		}
		pos += c
		if progress != nil {
			progress(pos, n)
		}
	}
	return nil
}

// newestMtime is the newest modification time of the given host files.
func newestMtime(sources ...Source) time.Time {
	var t time.Time
	for _, s := range sources {
		if s.path == "" {
			continue
		}
		if fi, err := os.Stat(s.path); err == nil && fi.ModTime().After(t) {
			t = fi.ModTime()
		}
	}
	return t.UTC().Truncate(time.Second)
}

func seedHash() hash.Hash { return sha256.New() }
