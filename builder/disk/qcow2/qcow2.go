// Package qcow2 converts raw disk images to qcow2 version 3, without
// qemu-img.
//
// The converter streams the raw image once, in order. It asks the file for
// its data extents (SEEK_DATA/SEEK_HOLE), so holes cost nothing, and leaves
// every all-zero cluster unallocated. Data clusters are appended to the
// output as they are found; the L2 tables (one per 512 MiB of guest space
// that holds data, 64 KiB each), the L1 table and the refcounts follow, and
// the header is written last. Memory is the L2 tables plus one cluster.
//
// The output uses 64 KiB clusters and 16-bit refcounts, no compression,
// no backing file, no snapshots; every cluster has refcount 1 and the
// COPIED flag. The same raw image always gives the same bytes.
package qcow2

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"kpaas.dev/appliance/internal/atomicfile"
	"kpaas.dev/appliance/internal/zero"
)

const (
	clusterBits  = 16
	clusterSize  = 1 << clusterBits
	l2Entries    = clusterSize / 8 // 8192 entries, 512 MiB of guest space per L2 table
	refcountBits = 16
	refsPerBlock = clusterSize * 8 / refcountBits // 32768 clusters (2 GiB of file) per refcount block
	copied       = uint64(1) << 63
	headerLength = 104
)

// Options control a conversion.
type Options struct {
	// Progress, when set, is called with the bytes of the raw image
	// examined so far and its size.
	Progress func(done, total int64)
}

// Stats describe a conversion.
type Stats struct {
	VirtualSize  int64 // guest-visible size = raw image size
	FileSize     int64 // bytes of the qcow2 file
	DataClusters int64 // allocated guest clusters
	Duration     time.Duration
}

// ConvertFile converts the raw image at src to a qcow2 image at dst,
// through a temp file beside dst and a rename (internal/atomicfile).
func ConvertFile(ctx context.Context, src, dst string, opts Options) (Stats, error) {
	in, err := os.Open(src)
	if err != nil {
		return Stats{}, err
	}
	defer in.Close()
	var st Stats
	err = atomicfile.Write(dst, 0o644, func(out *os.File) (err error) {
		st, err = Convert(ctx, out, in, opts)
		return err
	})
	if err != nil {
		return Stats{}, fmt.Errorf("converting %s to qcow2: %w", src, err)
	}
	return st, nil
}

// Convert writes a qcow2 image of the raw image in to out, which should be
// empty. The raw image's size, rounded up to 512 bytes, is its virtual size.
func Convert(ctx context.Context, out io.WriterAt, in *os.File, opts Options) (Stats, error) {
	start := time.Now()
	fi, err := in.Stat()
	if err != nil {
		return Stats{}, err
	}
	size := fi.Size()
	if size == 0 {
		return Stats{}, errors.New("raw image is empty")
	}
	virtual := (size + 511) &^ 511 // qemu sizes disks in 512-byte sectors
	guestClusters := (virtual + clusterSize - 1) / clusterSize
	l1Size := (guestClusters + l2Entries - 1) / l2Entries

	c := &conv{out: out, next: clusterSize /* cluster 0: header */, l2: map[int64][]uint64{}}
	buf := make([]byte, clusterSize)
	err = dataExtents(in, size, func(from, to int64) error {
		for off := from &^ (clusterSize - 1); off < to; off += clusterSize {
			if err := ctx.Err(); err != nil {
				return err
			}
			n := int64(clusterSize)
			if off+n > size {
				n = size - off
				clear(buf[n:])
			}
			if _, err := in.ReadAt(buf[:n], off); err != nil && !errors.Is(err, io.EOF) {
				return err
			}
			if opts.Progress != nil {
				opts.Progress(off+n, size)
			}
			if zero.Is(buf) {
				continue
			}
			if err := c.data(off/clusterSize, buf); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return Stats{}, err
	}
	if opts.Progress != nil {
		opts.Progress(size, size)
	}

	// L2 tables, in guest order
	l1 := make([]byte, l1Size*8)
	for i := int64(0); i < l1Size; i++ {
		t, ok := c.l2[i]
		if !ok {
			continue
		}
		b := make([]byte, clusterSize)
		for j, e := range t {
			binary.BigEndian.PutUint64(b[j*8:], e)
		}
		off, err := c.append(b)
		if err != nil {
			return Stats{}, err
		}
		binary.BigEndian.PutUint64(l1[i*8:], uint64(off)|copied)
	}
	l1Off, err := c.append(padCluster(l1))
	if err != nil {
		return Stats{}, err
	}

	// refcounts: blocks and table must count themselves too
	used := c.next / clusterSize
	var blocks, tableClusters int64
	for {
		nb := (used + blocks + tableClusters + refsPerBlock - 1) / refsPerBlock
		nt := (nb*8 + clusterSize - 1) / clusterSize
		if nb == blocks && nt == tableClusters {
			break
		}
		blocks, tableClusters = nb, nt
	}
	total := used + blocks + tableClusters
	table := make([]byte, tableClusters*clusterSize)
	for i := int64(0); i < blocks; i++ {
		b := make([]byte, clusterSize)
		for k := int64(0); k < refsPerBlock; k++ {
			if i*refsPerBlock+k < total {
				binary.BigEndian.PutUint16(b[k*2:], 1)
			}
		}
		off, err := c.append(b)
		if err != nil {
			return Stats{}, err
		}
		binary.BigEndian.PutUint64(table[i*8:], uint64(off))
	}
	tableOff, err := c.append(table)
	if err != nil {
		return Stats{}, err
	}

	h := make([]byte, clusterSize)
	be := binary.BigEndian
	copy(h[0:], "QFI\xfb")
	be.PutUint32(h[4:], 3)
	be.PutUint32(h[20:], clusterBits)
	be.PutUint64(h[24:], uint64(virtual))
	be.PutUint32(h[36:], uint32(l1Size))
	be.PutUint64(h[40:], uint64(l1Off))
	be.PutUint64(h[48:], uint64(tableOff))
	be.PutUint32(h[56:], uint32(tableClusters))
	be.PutUint32(h[96:], 4) // refcount_order: 2^4 = 16 bits
	be.PutUint32(h[100:], headerLength)
	// header extensions: only the end marker (type 0, length 0), already zero
	if _, err := out.WriteAt(h, 0); err != nil {
		return Stats{}, err
	}
	return Stats{VirtualSize: virtual, FileSize: c.next, DataClusters: c.dataClusters, Duration: time.Since(start)}, nil
}

type conv struct {
	out          io.WriterAt
	next         int64 // next free host offset
	l2           map[int64][]uint64
	dataClusters int64
}

func (c *conv) append(b []byte) (int64, error) {
	off := c.next
	if _, err := c.out.WriteAt(b, off); err != nil {
		return 0, err
	}
	c.next += int64(len(b))
	return off, nil
}

func (c *conv) data(guestCluster int64, b []byte) error {
	off, err := c.append(b)
	if err != nil {
		return err
	}
	c.dataClusters++
	t, ok := c.l2[guestCluster/l2Entries]
	if !ok {
		t = make([]uint64, l2Entries)
		c.l2[guestCluster/l2Entries] = t
	}
	t[guestCluster%l2Entries] = uint64(off) | copied
	return nil
}

func padCluster(b []byte) []byte {
	n := (len(b) + clusterSize - 1) / clusterSize * clusterSize
	if n == 0 {
		n = clusterSize
	}
	return append(b, make([]byte, n-len(b))...)
}

// dataExtents calls fn for each range of f that may hold data, in order,
// using SEEK_DATA/SEEK_HOLE; where the file system cannot tell, the whole
// file is one range.
func dataExtents(f *os.File, size int64, fn func(from, to int64) error) error {
	fd := int(f.Fd())
	for off := int64(0); off < size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			return nil // only a hole is left
		}
		if err != nil {
			return fn(off, size) // no SEEK_DATA support
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			hole = size
		}
		if err := fn(data, min(hole, size)); err != nil {
			return err
		}
		// the next extent starts past this one's last (partly used) cluster
		off = (min(hole, size) + clusterSize - 1) &^ (clusterSize - 1)
	}
	return nil
}
