package squashfs

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/sync/errgroup"

	"kpaas.dev/appliance/builder/disk/internal/zero"
)

// writer places the image's bytes at increasing offsets of w.
type writer struct {
	w           io.WriterAt
	opts        *Options
	pos         int64
	total, done int64
}

func (w *writer) put(b []byte) error {
	if m := w.opts.MaxSize; m > 0 && w.pos+int64(len(b)) > m {
		return fmt.Errorf("%w: more than %d bytes", ErrTooLarge, m)
	}
	if _, err := w.w.WriteAt(b, w.pos); err != nil {
		return err
	}
	w.pos += int64(len(b))
	return nil
}

// block is one data block on its way from the reader through a compressing
// worker to the writer, which takes blocks in the order they were read.
type block struct {
	f     *node
	first bool
	raw   []byte
	out   []byte
	size  uint32 // on-disk size word
	done  chan struct{}
}

// writeData writes the blocks of every regular file, in tree order.
func (w *writer) writeData(ctx context.Context, root *node) error {
	bs := w.opts.BlockSize
	workers := w.opts.Workers
	pool := sync.Pool{New: func() any { return make([]byte, bs) }}
	g, ctx := errgroup.WithContext(ctx)
	work := make(chan *block, workers)
	order := make(chan *block, 2*workers)

	for range workers {
		var c compressor
		if w.opts.Compression != None {
			var err error
			if c, _, err = newCompressor(w.opts.Compression, w.opts.Level); err != nil {
				return err
			}
		}
		g.Go(func() error {
			for b := range work {
				compressBlock(c, b)
				close(b.done)
			}
			return nil
		})
	}

	g.Go(func() error { // writer
		for b := range order {
			select {
			case <-b.done:
			case <-ctx.Done():
				return ctx.Err()
			}
			if b.first {
				b.f.start = uint64(w.pos)
			}
			b.f.blocks = append(b.f.blocks, b.size)
			switch {
			case b.size == 0:
				b.f.sparse += uint64(len(b.raw))
			case b.size&uncompressed != 0:
				if err := w.put(b.raw); err != nil {
					return err
				}
			default:
				if err := w.put(b.out); err != nil {
					return err
				}
			}
			w.done += int64(len(b.raw))
			if w.opts.Progress != nil {
				w.opts.Progress(w.done, w.total)
			}
			pool.Put(b.raw[:cap(b.raw)])
		}
		return nil
	})

	g.Go(func() error { // reader
		defer close(work)
		defer close(order)
		return walkFiles(root, func(n *node) error {
			f, err := n.open()
			if err != nil {
				return err
			}
			defer f.Close()
			for off := int64(0); off < n.size; off += int64(bs) {
				buf := pool.Get().([]byte)[:min(int64(bs), n.size-off)]
				if _, err := io.ReadFull(f, buf); err != nil {
					return fmt.Errorf("reading %s (did it change while packing?): %w", n.path, err)
				}
				b := &block{f: n, first: off == 0, raw: buf, done: make(chan struct{})}
				select {
				case order <- b:
				case <-ctx.Done():
					return ctx.Err()
				}
				select {
				case work <- b:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return nil
		})
	})
	return g.Wait()
}

// open opens a regular file's content.
func (n *node) open() (io.ReadCloser, error) {
	if n.spool != nil {
		return io.NopCloser(io.NewSectionReader(n.spool, n.off, n.size)), nil
	}
	return os.Open(n.path)
}

// walkFiles calls fn for every regular file with data, hard links once, in
// tree (name) order.
func walkFiles(n *node, fn func(*node) error) error {
	for _, c := range n.children {
		switch {
		case c.kind == typeDir:
			if err := walkFiles(c, fn); err != nil {
				return err
			}
		case c.kind == typeFile && c.link == nil && c.size > 0:
			if err := fn(c); err != nil {
				return err
			}
		}
	}
	return nil
}

func compressBlock(c compressor, b *block) {
	if zero.Is(b.raw) {
		b.size = 0
		return
	}
	b.size = uint32(len(b.raw)) | uncompressed
	if c == nil {
		return
	}
	out, err := c.compress(nil, b.raw)
	if err == nil && len(out) < len(b.raw) {
		b.out, b.size = out, uint32(len(out))
	}
}
