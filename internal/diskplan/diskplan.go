// Package diskplan describes a disk image as a list of extents to copy
// from files of a medium, and writes and verifies such a plan onto a disk.
// It is how the kpaas ISO installs: the builder describes the raw disk
// image it would write (builder/disk) by the ISO's own files (the root and
// bundle squashfs images, the kernel and initrd, and one small blob for
// the partition table and the ESP's metadata), and kpaas-init (agent/)
// applies the plan to the target disk. Nothing is stored twice on the ISO,
// and the installed disk is byte for byte what `kpaas image build --format
// raw` writes, over every extent of the plan.
//
// A plan is JSON (kind DiskPlan, see Plan). Apply writes the extents in
// order, hashing every source byte it reads and refusing a source whose
// SHA-256 differs from the plan's (a damaged medium); Verify reads the
// extents back from the target and checks them again. Zero extents (no
// source) clear the parts of the disk whose old content would otherwise be
// mistaken for a file system or a partition table.
package diskplan

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"maps"
	"path"
	"slices"
	"strings"

	"kpaas.dev/appliance/internal/zero"
)

// The plan's type.
const (
	APIVersion = "kpaas.dev/v1alpha1"
	Kind       = "DiskPlan"
)

// Plan is a disk image as extents.
type Plan struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	// DiskSize is the size of the image the plan describes: the target
	// disk must be at least this large. Its backup GPT lies at its end;
	// on a larger disk the installer moves it (see StatePartition).
	DiskSize int64 `json:"diskSize"`
	// DiskGUID is the GPT disk GUID of the image: a disk that carries it
	// is this installation already.
	DiskGUID string `json:"diskGUID"`
	// StatePartition is the number of the partition that is grown to the
	// end of a larger target disk.
	StatePartition int `json:"statePartition"`
	// Extents, sorted by offset, not overlapping.
	Extents []Extent `json:"extents"`
}

// Extent is a run of bytes of the disk.
type Extent struct {
	Offset int64 `json:"offset"` // on the disk
	Size   int64 `json:"size"`
	// File is the source, a path relative to the medium's root; empty
	// means zeros.
	File       string `json:"file,omitempty"`
	FileOffset int64  `json:"fileOffset,omitempty"`
	// SHA256 is the hex digest of the extent's bytes (with a File).
	SHA256 string `json:"sha256,omitempty"`
}

// End is the offset after the extent.
func (e Extent) End() int64 { return e.Offset + e.Size }

func (e Extent) String() string {
	if e.File == "" {
		return fmt.Sprintf("zeros at %d+%d", e.Offset, e.Size)
	}
	return fmt.Sprintf("%s@%d at %d+%d", e.File, e.FileOffset, e.Offset, e.Size)
}

// Bytes is the number of bytes the plan writes.
func (p *Plan) Bytes() int64 {
	var n int64
	for _, e := range p.Extents {
		n += e.Size
	}
	return n
}

// Parse reads and validates a plan.
func Parse(r io.Reader) (*Plan, error) {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	var p Plan
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("reading the disk plan: %w", err)
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &p, nil
}

// Validate reports every problem of the plan at once.
func (p *Plan) Validate() error {
	var errs []error
	if p.APIVersion != APIVersion || p.Kind != Kind {
		errs = append(errs, fmt.Errorf("apiVersion/kind %s/%s, want %s/%s", p.APIVersion, p.Kind, APIVersion, Kind))
	}
	if p.DiskSize <= 0 || p.DiskSize%512 != 0 {
		errs = append(errs, fmt.Errorf("diskSize %d: want a positive multiple of 512", p.DiskSize))
	}
	if p.StatePartition < 0 || p.StatePartition > 128 {
		errs = append(errs, fmt.Errorf("statePartition %d: out of range", p.StatePartition))
	}
	if len(p.Extents) == 0 {
		errs = append(errs, errors.New("no extents"))
	}
	var end int64
	for i, e := range p.Extents {
		bad := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("extents[%d] (%s): %s", i, e, fmt.Sprintf(format, args...)))
		}
		switch {
		case e.Size <= 0:
			bad("size must be positive")
		case e.Offset < end:
			bad("overlaps or precedes the extent before it")
		case e.End() > p.DiskSize:
			bad("ends beyond diskSize %d", p.DiskSize)
		}
		if e.File == "" {
			if e.SHA256 != "" || e.FileOffset != 0 {
				bad("a zero extent has no fileOffset or sha256")
			}
		} else {
			if !fs.ValidPath(e.File) || path.Clean(e.File) != e.File {
				bad("file must be a clean relative path")
			}
			if e.FileOffset < 0 {
				bad("negative fileOffset")
			}
			if b, err := hex.DecodeString(e.SHA256); err != nil || len(b) != sha256.Size {
				bad("sha256 must be 64 hex digits")
			}
		}
		end = max(end, e.End())
	}
	return errors.Join(errs...)
}

// Target is the disk a plan is written to.
type Target interface {
	io.ReaderAt
	io.WriterAt
}

// Options of Apply and Verify.
type Options struct {
	// Progress receives the bytes done of the plan's Bytes.
	Progress func(done, total int64)
}

const chunk = 1 << 20

// ErrMismatch is returned (wrapped) when a source or the written disk
// differs from the plan's digest.
var ErrMismatch = errors.New("content differs from the plan")

// Apply writes the plan's extents onto t, reading sources from media.
// Every source must be an io.ReaderAt (os.DirFS files are). A source
// whose bytes differ from the plan's SHA-256 stops the write: the disk is
// then partly written, and must not be booted.
func Apply(ctx context.Context, p *Plan, media fs.FS, t Target, o Options) error {
	src := sources{fs: media, open: map[string]fs.File{}}
	defer src.close()
	return walk(ctx, p, o, func(e Extent, buf []byte, h hash.Hash, pos int64) error {
		if e.File != "" {
			if err := src.read(e, buf, pos); err != nil {
				return err
			}
			h.Write(buf)
		} else {
			clear(buf)
		}
		_, err := t.WriteAt(buf, e.Offset+pos)
		return err
	}, func(e Extent, h hash.Hash) error {
		if e.File != "" && hex.EncodeToString(h.Sum(nil)) != e.SHA256 {
			return fmt.Errorf("%s on the medium: %w (sha256 %x, want %s): the medium is damaged", e.File, ErrMismatch, h.Sum(nil), e.SHA256)
		}
		return nil
	})
}

// Verify reads the plan's extents back from t and checks them: the
// digests of the sourced ones, zeros for the others.
func Verify(ctx context.Context, p *Plan, t io.ReaderAt, o Options) error {
	return walk(ctx, p, o, func(e Extent, buf []byte, h hash.Hash, pos int64) error {
		if _, err := t.ReadAt(buf, e.Offset+pos); err != nil {
			return fmt.Errorf("reading back: %w", err)
		}
		if e.File == "" && !zero.Is(buf) {
			return fmt.Errorf("disk at %d: %w (not zeros)", e.Offset+pos, ErrMismatch)
		}
		h.Write(buf)
		return nil
	}, func(e Extent, h hash.Hash) error {
		if e.File != "" && hex.EncodeToString(h.Sum(nil)) != e.SHA256 {
			return fmt.Errorf("disk at %d+%d (%s): %w (sha256 %x, want %s)", e.Offset, e.Size, e.File, ErrMismatch, h.Sum(nil), e.SHA256)
		}
		return nil
	})
}

// walk calls each for every chunk of every extent, then done per extent,
// and reports progress.
func walk(ctx context.Context, p *Plan, o Options, each func(e Extent, buf []byte, h hash.Hash, pos int64) error, done func(Extent, hash.Hash) error) error {
	if err := p.Validate(); err != nil {
		return err
	}
	buf := make([]byte, chunk)
	total, written := p.Bytes(), int64(0)
	for _, e := range p.Extents {
		h := sha256.New()
		for pos := int64(0); pos < e.Size; {
			if err := ctx.Err(); err != nil {
				return err
			}
			n := min(int64(len(buf)), e.Size-pos)
			if err := each(e, buf[:n], h, pos); err != nil {
				return fmt.Errorf("%s: %w", e, err)
			}
			pos += n
			written += n
			if o.Progress != nil {
				o.Progress(written, total)
			}
		}
		if err := done(e, h); err != nil {
			return err
		}
	}
	return nil
}

// sources keeps the medium's files open while a plan is applied.
type sources struct {
	fs   fs.FS
	open map[string]fs.File
}

func (s *sources) close() {
	for _, f := range s.open {
		f.Close()
	}
}

func (s *sources) read(e Extent, buf []byte, pos int64) error {
	f, ok := s.open[e.File]
	if !ok {
		var err error
		if f, err = s.fs.Open(e.File); err != nil {
			return err
		}
		s.open[e.File] = f
	}
	ra, ok := f.(io.ReaderAt)
	if !ok {
		return fmt.Errorf("%s: the medium's files cannot be read at an offset", e.File)
	}
	n, err := ra.ReadAt(buf, e.FileOffset+pos)
	if n == len(buf) {
		return nil
	}
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("%s ends at %d: the plan wants %d bytes from %d: %w", e.File, e.FileOffset+pos+int64(n), e.Size, e.FileOffset, ErrMismatch)
	}
	return err
}

// Summary is a one-line description: extents by source, bytes.
func (p *Plan) Summary() string {
	by := map[string]int64{}
	for _, e := range p.Extents {
		k := e.File
		if k == "" {
			k = "zeros"
		}
		by[k] += e.Size
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(by)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, by[k]))
	}
	return fmt.Sprintf("%d extents, %d bytes (%s)", len(p.Extents), p.Bytes(), strings.Join(parts, ", "))
}
