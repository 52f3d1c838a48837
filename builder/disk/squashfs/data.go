package squashfs

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/sync/errgroup"

	"kpaas.dev/appliance/internal/zero"
)

// writer places the image's bytes at increasing offsets of w.
type writer struct {
	w           io.WriterAt
	opts        *Options
	pos         int64
	total, done int64
	// frags is the fragment table: one 16-byte entry per fragment block,
	// in the order the blocks were written (which is their index)
	frags []byte
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

// putTable writes a lookup table (ids, fragments): entries, whose size
// divides the metadata block size, in metadata blocks, then the index of
// those blocks' positions. It returns the position of the index, which is
// what the superblock points at.
func (w *writer) putTable(c compressor, entries []byte) (uint64, error) {
	m := &metaWriter{c: c}
	var starts []uint64
	for i := 0; i < len(entries); i += metaSize {
		b, _ := m.pos()
		starts = append(starts, uint64(w.pos)+uint64(b))
		m.write(entries[i:min(i+metaSize, len(entries))])
	}
	blocks, err := m.finish()
	if err != nil {
		return 0, err
	}
	if err := w.put(blocks); err != nil {
		return 0, err
	}
	at := uint64(w.pos)
	var index []byte
	for _, s := range starts {
		index = binary.LittleEndian.AppendUint64(index, s)
	}
	return at, w.put(index)
}

// block is one data block, or one fragment block (f is nil), on its way
// from the reader through a compressing worker to the writer, which takes
// blocks in the order they were read.
type block struct {
	f     *node
	first bool
	raw   []byte
	out   []byte
	size  uint32 // on-disk size word
	done  chan struct{}
}

// writeData writes the blocks of every regular file, in tree order, and
// the fragment blocks that hold the files' tails.
//
// One reader goroutine walks the files in order: it cuts each file into
// full blocks and, unless Options.NoFragments, copies the tail (the last
// size % BlockSize bytes, so all of a file smaller than a block) into the
// fragment block being filled. When a tail does not fit, that fragment
// block is sealed and queued like a data block, and the tail starts the
// next one. Workers compress blocks in any order; the writer takes them
// in the reader's order. So fragment numbers, offsets and every position
// follow the file order alone, whatever the number of workers: a file's
// data blocks stay contiguous (its tail comes after them), and a fragment
// block lands between two files' data.
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
			if b.f == nil { // a fragment block
				w.frags = binary.LittleEndian.AppendUint64(w.frags, uint64(w.pos))
				w.frags = binary.LittleEndian.AppendUint32(w.frags, b.size)
				w.frags = binary.LittleEndian.AppendUint32(w.frags, 0) // unused
			} else {
				if b.first {
					b.f.start = uint64(w.pos)
				}
				b.f.blocks = append(b.f.blocks, b.size)
			}
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
		send := func(b *block) error {
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
			return nil
		}
		var frag []byte // the fragment block being filled
		var fragIndex uint32
		err := walkFiles(root, func(n *node) error {
			f, err := n.open()
			if err != nil {
				return err
			}
			defer f.Close()
			full, tail := n.size, int64(0)
			if !w.opts.NoFragments {
				tail = n.size % int64(bs)
				full -= tail
			}
			for off := int64(0); off < full; off += int64(bs) {
				buf := pool.Get().([]byte)[:min(int64(bs), full-off)]
				if _, err := io.ReadFull(f, buf); err != nil {
					return fmt.Errorf("reading %s (did it change while packing?): %w", n.path, err)
				}
				if err := send(&block{f: n, first: off == 0, raw: buf, done: make(chan struct{})}); err != nil {
					return err
				}
			}
			if tail == 0 {
				return nil
			}
			if frag != nil && len(frag)+int(tail) > bs {
				if err := send(&block{raw: frag, done: make(chan struct{})}); err != nil {
					return err
				}
				frag = nil
				fragIndex++
			}
			if frag == nil {
				frag = pool.Get().([]byte)[:0]
			}
			n.frag, n.fragOffset, n.inFragment = fragIndex, uint32(len(frag)), true
			frag = frag[:len(frag)+int(tail)]
			if _, err := io.ReadFull(f, frag[n.fragOffset:]); err != nil {
				return fmt.Errorf("reading %s (did it change while packing?): %w", n.path, err)
			}
			return nil
		})
		if err == nil && frag != nil {
			err = send(&block{raw: frag, done: make(chan struct{})})
		}
		return err
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

// compressBlock sets the block's size word and compressed bytes. An
// all-zero data block becomes a hole (size 0); a fragment block is never
// a hole, as the format has no such thing: its zeros are compressed.
func compressBlock(c compressor, b *block) {
	if b.f != nil && zero.Is(b.raw) {
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
