// Package squashfs writes SquashFS 4.0 images from a directory tree,
// without root, loop devices or mksquashfs.
//
// The writer streams: file data is read once, in name order, compressed by a
// few workers and written in order, so memory stays bounded by the block
// size times the worker count (plus the fragment block being filled) and
// the metadata tables (about 40 bytes per file). The output is
// deterministic: the same tree and Options give the same bytes, whatever
// the number of workers (entries are sorted, inode numbers assigned breadth
// first, tails packed into fragment blocks in file order, the mkfs time is
// Options.ModTime or the newest mtime in the tree).
//
// It writes what the Linux kernel needs to mount the image read-only. The
// tail of every file (all of a file smaller than a block) is packed into
// shared fragment blocks, as mksquashfs -tailends and sqfstar do (plain
// mksquashfs packs only files smaller than a block); Options.NoFragments
// turns that off. Hard links, symlinks, device nodes, fifos and sockets
// are kept; all-zero full blocks become holes (an all-zero tail goes into
// a fragment block like any other). It writes no export table (not
// NFS-exportable), no xattrs, and does no duplicate detection.
//
// Why not go-diskfs' squashfs: it needs a copy of the whole tree in a
// scratch directory (the bundle's blobs would be stored twice while
// building), stamps the current time into the superblock, and compresses
// on one core.
package squashfs

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"os"
	"runtime"
	"sort"
	"time"

	"kpaas.dev/appliance/internal/atomicfile"
)

const (
	magic        = 0x73717368
	superSize    = 96
	invalidBlock = math.MaxUint64
	noFragment   = math.MaxUint32
	noXattr      = math.MaxUint32
	uncompressed = 1 << 24 // data block stored as is

	flagNoData     = 0x0002 // data blocks not compressed
	flagNoFragComp = 0x0008 // fragment blocks not compressed
	flagNoFrag     = 0x0010 // no fragments
	flagAlwaysFrag = 0x0020 // tails of files larger than a block in fragments too
	flagNoXattr    = 0x0200

	// DefaultBlockSize is 128 KiB: 4 KiB blocks are ~35x slower to write and
	// read for no gain on these payloads.
	DefaultBlockSize = 128 << 10
)

// ErrTooLarge is returned (wrapped) when the image would outgrow Options.MaxSize.
var ErrTooLarge = errors.New("squashfs image larger than the space for it")

// Owner forces the owner of every entry, e.g. root for a root filesystem
// that was unpacked by an ordinary user.
type Owner struct{ UID, GID uint32 }

// Options control an image. The zero value writes zstd, 128 KiB blocks,
// with the owners and mtimes of the tree.
type Options struct {
	Compression Compression // Zstd (default), Gzip or None
	Level       int         // compressor level; 0 = the compressor's default
	BlockSize   int         // power of two, 4 KiB … 1 MiB; 0 = 128 KiB
	// ModTime, when set, clamps every entry's mtime to it and is the mkfs
	// time (SOURCE_DATE_EPOCH semantics). Otherwise the mkfs time is the
	// newest mtime in the tree.
	ModTime time.Time
	Owner   *Owner // nil keeps each entry's uid/gid
	Workers int    // compressing goroutines; 0 = GOMAXPROCS
	// MaxSize, when positive, fails the write with ErrTooLarge as soon as
	// the image would be larger.
	MaxSize int64
	// Progress, when set, is called with the number of file bytes read so
	// far (from one goroutine, in increasing order).
	Progress func(done, total int64)
	// Exclude, when set, leaves out the entries of the folder for which it
	// returns true, given their slash-separated path relative to the
	// folder (a folder is left out with everything below it). Write only.
	Exclude func(rel string) bool
	// NoFragments stores the tail of every file as a short data block of
	// its own instead of packing tails into shared fragment blocks: the
	// image is larger (about 5% for a Debian root), but every file's data
	// is contiguous.
	NoFragments bool
}

// Stats describe a written image.
type Stats struct {
	Size        int64 // bytes written, padded to 4 KiB
	Inodes      int
	Files       int   // regular files (hard links counted once)
	InputBytes  int64 // sum of regular file sizes
	Fragments   int   // fragment blocks
	Compression Compression
	BlockSize   int
	ModTime     time.Time // mkfs time
}

// WriteFile writes an image of dir to path, through a temp file beside it
// and a rename (internal/atomicfile).
func WriteFile(ctx context.Context, path, dir string, opts Options) (Stats, error) {
	return writeFile(path, func(f *os.File) (Stats, error) { return Write(ctx, f, dir, opts) })
}

// writeFile runs write on a temp file beside path, truncates it to the
// image's size, and renames it to path; on failure it removes it.
func writeFile(path string, write func(*os.File) (Stats, error)) (Stats, error) {
	var st Stats
	err := atomicfile.Write(path, 0o644, func(f *os.File) (err error) {
		if st, err = write(f); err != nil {
			return err
		}
		return f.Truncate(st.Size)
	})
	if err != nil {
		return Stats{}, err
	}
	return st, nil
}

// Write writes an image of the tree under dir to w, starting at offset 0
// of w (wrap w in an io.OffsetWriter to place it elsewhere, e.g. inside a
// partition). It writes every byte up to Stats.Size, except the holes of
// sparse files, which it skips.
func Write(ctx context.Context, w io.WriterAt, dir string, opts Options) (Stats, error) {
	if err := opts.normalize(); err != nil {
		return Stats{}, err
	}
	sc := &scanner{opts: &opts}
	root, err := sc.scan(dir)
	if err != nil {
		return Stats{}, fmt.Errorf("reading %s: %w", dir, err)
	}
	return writeTree(ctx, w, root, sc, opts)
}

// normalize fills in defaults and checks the options.
func (opts *Options) normalize() error {
	if opts.Compression == "" {
		opts.Compression = Zstd
	}
	if opts.BlockSize == 0 {
		opts.BlockSize = DefaultBlockSize
	}
	bs := opts.BlockSize
	if bs < 4096 || bs > 1<<20 || bs&(bs-1) != 0 {
		return fmt.Errorf("squashfs block size %d: want a power of two from 4096 to 1048576", bs)
	}
	if opts.Workers <= 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	_, _, err := newCompressor(opts.Compression, opts.Level)
	return err
}

// writeTree writes the image of a scanned (or assembled) tree: sc holds
// its counts (inodes numbered, files, bytes, newest mtime); opts are
// normalized.
func writeTree(ctx context.Context, w io.WriterAt, root *node, sc *scanner, opts Options) (Stats, error) {
	bs := opts.BlockSize
	metaComp, compID, err := newCompressor(opts.Compression, opts.Level)
	if err != nil {
		return Stats{}, err
	}
	wr := &writer{w: w, opts: &opts, pos: superSize, total: sc.bytes}
	if err := wr.writeData(ctx, root); err != nil {
		return Stats{}, err
	}

	// ids: sorted, so the table and every index are deterministic
	idx := map[uint32]uint16{}
	var ids []uint32
	collectIDs(root, idx, &ids)
	if len(ids) > math.MaxUint16 {
		return Stats{}, fmt.Errorf("too many distinct uids/gids (%d)", len(ids))
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for i, id := range ids {
		idx[id] = uint16(i)
	}

	inodes := &metaWriter{c: metaComp}
	dirs := &metaWriter{c: metaComp}
	t := &tables{inodes: inodes, dirs: dirs, ids: idx, inodeCount: sc.inodes}
	if err := t.writeDir(root); err != nil {
		return Stats{}, err
	}
	inodeTable, err := inodes.finish()
	if err != nil {
		return Stats{}, err
	}
	dirTable, err := dirs.finish()
	if err != nil {
		return Stats{}, err
	}

	fragments := len(wr.frags) / 16
	if uint64(fragments) >= noFragment { // 0xFFFFFFFF means "no fragment"
		return Stats{}, fmt.Errorf("too many fragment blocks (%d)", fragments)
	}
	sb := superblock{
		inodes:     sc.inodes,
		blockSize:  uint32(bs),
		blockLog:   uint16(bits.TrailingZeros32(uint32(bs))),
		fragments:  uint32(fragments),
		compID:     compID,
		flags:      flagNoXattr,
		rootInode:  root.ref,
		xattrStart: invalidBlock,
		lookup:     invalidBlock,
	}
	if opts.NoFragments {
		sb.flags |= flagNoFrag
	} else {
		sb.flags |= flagAlwaysFrag
	}
	if opts.Compression == None {
		sb.flags |= flagNoData
		if !opts.NoFragments {
			sb.flags |= flagNoFragComp
		}
	}
	if opts.ModTime.IsZero() {
		sb.mkfsTime = uint32(sc.newest)
	} else {
		sb.mkfsTime = unixTime(opts.ModTime)
	}

	sb.inodeStart = uint64(wr.pos)
	if err := wr.put(inodeTable); err != nil {
		return Stats{}, err
	}
	sb.dirStart = uint64(wr.pos)
	if err := wr.put(dirTable); err != nil {
		return Stats{}, err
	}
	// fragment table, then id table: metadata blocks of entries, then the
	// index of their positions (with no fragments, an empty table)
	if sb.fragStart, err = wr.putTable(metaComp, wr.frags); err != nil {
		return Stats{}, err
	}
	var idEntries []byte
	for _, id := range ids {
		idEntries = binary.LittleEndian.AppendUint32(idEntries, id)
	}
	if sb.idStart, err = wr.putTable(metaComp, idEntries); err != nil {
		return Stats{}, err
	}
	sb.ids = uint16(len(ids))
	sb.bytesUsed = uint64(wr.pos)

	// pad to 4 KiB, the unit of loop devices and page reads
	size := (wr.pos + 4095) &^ 4095
	if pad := size - wr.pos; pad > 0 {
		if err := wr.put(make([]byte, pad)); err != nil {
			return Stats{}, err
		}
	}
	if _, err := w.WriteAt(sb.bytes(), 0); err != nil {
		return Stats{}, err
	}
	return Stats{
		Size:        size,
		Inodes:      int(sc.inodes),
		Files:       sc.files,
		InputBytes:  sc.bytes,
		Fragments:   fragments,
		Compression: opts.Compression,
		BlockSize:   bs,
		ModTime:     time.Unix(int64(sb.mkfsTime), 0).UTC(),
	}, nil
}

func collectIDs(n *node, idx map[uint32]uint16, ids *[]uint32) {
	for _, id := range []uint32{n.uid, n.gid} {
		if _, ok := idx[id]; !ok {
			idx[id] = 0
			*ids = append(*ids, id)
		}
	}
	for _, c := range n.children {
		collectIDs(c, idx, ids)
	}
}

type superblock struct {
	inodes, mkfsTime, blockSize, fragments uint32
	compID, blockLog, flags, ids           uint16
	rootInode, bytesUsed, idStart          uint64
	xattrStart, inodeStart, dirStart       uint64
	fragStart, lookup                      uint64
}

func (s superblock) bytes() []byte {
	b := make([]byte, 0, superSize)
	le := binary.LittleEndian
	b = le.AppendUint32(b, magic)
	b = le.AppendUint32(b, s.inodes)
	b = le.AppendUint32(b, s.mkfsTime)
	b = le.AppendUint32(b, s.blockSize)
	b = le.AppendUint32(b, s.fragments)
	b = le.AppendUint16(b, s.compID)
	b = le.AppendUint16(b, s.blockLog)
	b = le.AppendUint16(b, s.flags)
	b = le.AppendUint16(b, s.ids)
	b = le.AppendUint16(b, 4) // major
	b = le.AppendUint16(b, 0) // minor
	for _, v := range []uint64{s.rootInode, s.bytesUsed, s.idStart, s.xattrStart,
		s.inodeStart, s.dirStart, s.fragStart, s.lookup} {
		b = le.AppendUint64(b, v)
	}
	return b
}
