package bundle

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sync/errgroup"
)

// Writer copies images and indexes into a Store. Blobs are streamed from
// their source (fetched only when written), several at a time, and each
// blob is written once even when many images share it. Manifests are
// written after everything they reference, so a manifest present in the
// store means its content is complete: an interrupted copy resumes where
// it stopped.
type Writer struct {
	s      *Store
	jobs   int
	onBlob func(BlobEvent)

	mu       sync.Mutex
	inflight map[v1.Hash]*flight

	stats Stats
}

type flight struct {
	done chan struct{}
	err  error
}

// BlobEvent tells a progress display about one blob.
type BlobEvent struct {
	Digest  v1.Hash
	Size    int64
	Written bool // false: already present, skipped
}

// Stats counts what a Writer did. Byte counts are the blobs' real sizes,
// also for blobs written with an unknown size (WriteStream with -1).
type Stats struct {
	BlobsWritten int64 `json:"blobsWritten"`
	BlobsSkipped int64 `json:"blobsSkipped"`
	BytesWritten int64 `json:"bytesWritten"`
	BytesSkipped int64 `json:"bytesSkipped"`
}

// WriterOption configures a Writer.
type WriterOption func(*Writer)

// WithJobs sets how many blobs are copied at once (default 4).
func WithJobs(n int) WriterOption {
	return func(w *Writer) {
		if n > 0 {
			w.jobs = n
		}
	}
}

// WithBlobEvents calls fn after each blob (from several goroutines).
func WithBlobEvents(fn func(BlobEvent)) WriterOption {
	return func(w *Writer) { w.onBlob = fn }
}

// NewWriter returns a Writer into s.
func (s *Store) NewWriter(opts ...WriterOption) *Writer {
	w := &Writer{s: s, jobs: 4, inflight: map[v1.Hash]*flight{}}
	for _, o := range opts {
		o(w)
	}
	return w
}

// Stats returns what the writer has done so far.
func (w *Writer) Stats() Stats {
	return Stats{
		BlobsWritten: atomic.LoadInt64(&w.stats.BlobsWritten),
		BlobsSkipped: atomic.LoadInt64(&w.stats.BlobsSkipped),
		BytesWritten: atomic.LoadInt64(&w.stats.BytesWritten),
		BytesSkipped: atomic.LoadInt64(&w.stats.BytesSkipped),
	}
}

// blob writes one blob once: concurrent callers for the same digest wait
// for the first.
func (w *Writer) blob(h v1.Hash, size int64, open func() (io.ReadCloser, error)) error {
	w.mu.Lock()
	if f, ok := w.inflight[h]; ok {
		w.mu.Unlock()
		<-f.done
		return f.err
	}
	f := &flight{done: make(chan struct{})}
	w.inflight[h] = f
	w.mu.Unlock()

	f.err = w.writeOnce(h, size, open)
	close(f.done)
	if f.err != nil {
		w.mu.Lock()
		delete(w.inflight, h) // let a later attempt retry
		w.mu.Unlock()
	}
	return f.err
}

func (w *Writer) writeOnce(h v1.Hash, size int64, open func() (io.ReadCloser, error)) error {
	if w.s.HasBlob(h, size) {
		w.count(h, size, false)
		return nil
	}
	rc, err := open()
	if err != nil {
		return fmt.Errorf("fetching blob %s: %w", h, err)
	}
	defer rc.Close()
	written, err := w.s.WriteBlob(h, size, rc)
	if err != nil {
		return err
	}
	w.count(h, size, written)
	return nil
}

func (w *Writer) count(h v1.Hash, size int64, written bool) {
	if size < 0 {
		// Written or found with an unknown size: count what is on disk.
		size = 0
		if p, err := w.s.BlobPath(h); err == nil {
			if fi, err := os.Stat(p); err == nil {
				size = fi.Size()
			}
		}
	}
	if written {
		atomic.AddInt64(&w.stats.BlobsWritten, 1)
		atomic.AddInt64(&w.stats.BytesWritten, size)
	} else {
		atomic.AddInt64(&w.stats.BlobsSkipped, 1)
		atomic.AddInt64(&w.stats.BytesSkipped, size)
	}
	if w.onBlob != nil {
		w.onBlob(BlobEvent{Digest: h, Size: size, Written: written})
	}
}

func (w *Writer) bytes(h v1.Hash, b []byte) error {
	return w.blob(h, int64(len(b)), func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	})
}

// WriteImage copies img (layers, config, then manifest) and returns the
// manifest's descriptor.
func (w *Writer) WriteImage(ctx context.Context, img v1.Image) (v1.Descriptor, error) {
	raw, err := img.RawManifest()
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("reading manifest: %w", err)
	}
	h, size, err := v1.SHA256(bytes.NewReader(raw))
	if err != nil {
		return v1.Descriptor{}, err
	}
	mt, err := img.MediaType()
	if err != nil {
		return v1.Descriptor{}, err
	}
	desc := v1.Descriptor{MediaType: mt, Digest: h, Size: size}
	if w.s.HasBlob(h, size) {
		// Present manifest: everything below it was written before it.
		w.count(h, size, false)
		return desc, nil
	}
	m, err := img.Manifest()
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("parsing manifest %s: %w", h, err)
	}
	layers, err := img.Layers()
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("listing layers of %s: %w", h, err)
	}
	if len(layers) != len(m.Layers) {
		return v1.Descriptor{}, fmt.Errorf("manifest %s: %d layers listed, %d found", h, len(m.Layers), len(layers))
	}
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(w.jobs)
	for i, l := range layers {
		ld := m.Layers[i]
		l := l
		g.Go(func() error {
			if err := ctx.Err(); err != nil {
				return err
			}
			return w.blob(ld.Digest, ld.Size, l.Compressed)
		})
	}
	g.Go(func() error {
		cfg, err := img.RawConfigFile()
		if err != nil {
			return fmt.Errorf("reading config %s: %w", m.Config.Digest, err)
		}
		return w.blob(m.Config.Digest, m.Config.Size, func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(cfg)), nil
		})
	})
	if err := g.Wait(); err != nil {
		return v1.Descriptor{}, err
	}
	if err := w.bytes(h, raw); err != nil {
		return v1.Descriptor{}, err
	}
	return desc, nil
}

// WriteIndex copies idx, keeping only the children keep accepts (nil keeps
// all). When every child is kept, the index is stored byte for byte and
// keeps its digest; otherwise a filtered index is written and its
// descriptor carries AnnotationSourceDigest with the upstream digest.
func (w *Writer) WriteIndex(ctx context.Context, idx v1.ImageIndex, keep func(v1.Descriptor) bool) (v1.Descriptor, error) {
	raw, err := idx.RawManifest()
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("reading index: %w", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("parsing index: %w", err)
	}
	mt, err := idx.MediaType()
	if err != nil {
		return v1.Descriptor{}, err
	}
	srcDigest, _, err := v1.SHA256(bytes.NewReader(raw))
	if err != nil {
		return v1.Descriptor{}, err
	}
	var kept []v1.Descriptor
	for _, c := range im.Manifests {
		if keep == nil || keep(c) {
			kept = append(kept, c)
		}
	}
	if len(kept) == 0 {
		return v1.Descriptor{}, fmt.Errorf("index %s has no manifest for the selected platforms", srcDigest)
	}
	for _, c := range kept {
		switch {
		case IsIndex(c.MediaType):
			child, err := idx.ImageIndex(c.Digest)
			if err != nil {
				return v1.Descriptor{}, fmt.Errorf("reading index %s: %w", c.Digest, err)
			}
			if _, err := w.WriteIndex(ctx, child, nil); err != nil {
				return v1.Descriptor{}, err
			}
		case IsManifest(c.MediaType):
			child, err := idx.Image(c.Digest)
			if err != nil {
				return v1.Descriptor{}, fmt.Errorf("reading image %s: %w", c.Digest, err)
			}
			if _, err := w.WriteImage(ctx, child); err != nil {
				return v1.Descriptor{}, err
			}
		default:
			return v1.Descriptor{}, fmt.Errorf("index %s: child %s has unsupported media type %q", srcDigest, c.Digest, c.MediaType)
		}
	}
	if len(kept) != len(im.Manifests) {
		filtered := *im
		filtered.Manifests = kept
		raw, err = json.Marshal(&filtered)
		if err != nil {
			return v1.Descriptor{}, err
		}
	}
	h, size, err := v1.SHA256(bytes.NewReader(raw))
	if err != nil {
		return v1.Descriptor{}, err
	}
	if err := w.bytes(h, raw); err != nil {
		return v1.Descriptor{}, err
	}
	desc := v1.Descriptor{MediaType: mt, Digest: h, Size: size}
	if h != srcDigest {
		desc.Annotations = map[string]string{AnnotationSourceDigest: srcDigest.String()}
	}
	return desc, nil
}

// WriteBytes stores a small blob (a manifest or config assembled in
// memory) and returns its digest and size.
func (w *Writer) WriteBytes(b []byte) (v1.Hash, int64, error) {
	h, size, err := v1.SHA256(bytes.NewReader(b))
	if err != nil {
		return v1.Hash{}, 0, err
	}
	return h, size, w.bytes(h, b)
}

// WriteStream stores a blob of known digest and size from open.
func (w *Writer) WriteStream(h v1.Hash, size int64, open func() (io.ReadCloser, error)) error {
	return w.blob(h, size, open)
}
