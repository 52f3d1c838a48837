package squashfs

import (
	"encoding/binary"
	"fmt"
	"math"
)

// tables writes the inode and directory tables, children before parents,
// so every reference a record needs is known when it is written.
type tables struct {
	inodes, dirs *metaWriter
	ids          map[uint32]uint16
	inodeCount   uint32
}

func (t *tables) writeDir(d *node) error {
	for _, c := range d.children {
		if c.kind == typeDir {
			if err := t.writeDir(c); err != nil {
				return err
			}
			continue
		}
		if p := c.primary(); !p.written {
			if err := t.writeInode(p); err != nil {
				return err
			}
		}
	}
	d.dirBlock, d.dirOffset = t.dirs.pos()
	listing := listing(d.children)
	t.dirs.write(listing)
	d.dirSize = uint32(len(listing)) + 3 // the kernel counts "." and ".." as 3 bytes
	return t.writeInode(d)
}

// listing encodes a directory: runs of up to 256 entries under a header
// naming the inode metadata block they live in and a base inode number.
func listing(children []*node) []byte {
	le := binary.LittleEndian
	var out []byte
	for i := 0; i < len(children); {
		first := children[i].primary()
		blk, base := uint32(first.ref>>16), first.ino
		j := i
		for ; j < len(children) && j-i < 256; j++ {
			p := children[j].primary()
			d := int64(p.ino) - int64(base)
			if uint32(p.ref>>16) != blk || d < math.MinInt16 || d > math.MaxInt16 {
				break
			}
		}
		out = le.AppendUint32(out, uint32(j-i-1))
		out = le.AppendUint32(out, blk)
		out = le.AppendUint32(out, base)
		for _, c := range children[i:j] {
			p := c.primary()
			out = le.AppendUint16(out, uint16(p.ref&0xffff))
			out = le.AppendUint16(out, uint16(int16(int64(p.ino)-int64(base))))
			out = le.AppendUint16(out, p.kind)
			out = le.AppendUint16(out, uint16(len(c.name)-1))
			out = append(out, c.name...)
		}
		i = j
	}
	return out
}

func (t *tables) writeInode(n *node) error {
	if len(n.name) > 256 {
		return fmt.Errorf("%s: name longer than 256 bytes", n.path)
	}
	blk, off := t.inodes.pos()
	n.ref = uint64(blk)<<16 | uint64(off)
	n.written = true

	le := binary.LittleEndian
	kind := n.kind
	var b []byte
	header := func(k uint16) {
		b = le.AppendUint16(b, k)
		b = le.AppendUint16(b, n.perm)
		b = le.AppendUint16(b, t.ids[n.uid])
		b = le.AppendUint16(b, t.ids[n.gid])
		b = le.AppendUint32(b, n.mtime)
		b = le.AppendUint32(b, n.ino)
	}
	switch kind {
	case typeDir:
		parent := t.inodeCount + 1
		if n.parent != nil {
			parent = n.parent.ino
		}
		nlink := 2 + n.subdirs
		if n.dirSize <= math.MaxUint16 {
			header(typeDir)
			b = le.AppendUint32(b, n.dirBlock)
			b = le.AppendUint32(b, nlink)
			b = le.AppendUint16(b, uint16(n.dirSize))
			b = le.AppendUint16(b, n.dirOffset)
			b = le.AppendUint32(b, parent)
		} else {
			header(typeLDir)
			b = le.AppendUint32(b, nlink)
			b = le.AppendUint32(b, n.dirSize)
			b = le.AppendUint32(b, n.dirBlock)
			b = le.AppendUint32(b, parent)
			b = le.AppendUint16(b, 0) // no index: lookups scan the listing
			b = le.AppendUint16(b, n.dirOffset)
			b = le.AppendUint32(b, noXattr)
		}
	case typeFile:
		frag, fragOffset := uint32(noFragment), uint32(0)
		if n.inFragment {
			frag, fragOffset = n.frag, n.fragOffset
		}
		if n.nlink > 1 || n.start > math.MaxUint32 || n.size > math.MaxUint32 {
			header(typeLFile)
			b = le.AppendUint64(b, n.start)
			b = le.AppendUint64(b, uint64(n.size))
			b = le.AppendUint64(b, n.sparse)
			b = le.AppendUint32(b, n.nlink)
			b = le.AppendUint32(b, frag)
			b = le.AppendUint32(b, fragOffset)
			b = le.AppendUint32(b, noXattr)
		} else {
			header(typeFile)
			b = le.AppendUint32(b, uint32(n.start))
			b = le.AppendUint32(b, frag)
			b = le.AppendUint32(b, fragOffset)
			b = le.AppendUint32(b, uint32(n.size))
		}
		for _, s := range n.blocks {
			b = le.AppendUint32(b, s)
		}
	case typeSymlink:
		header(typeSymlink)
		b = le.AppendUint32(b, n.nlink)
		b = le.AppendUint32(b, uint32(len(n.target)))
		b = append(b, n.target...)
	case typeBlock, typeChar:
		header(kind)
		b = le.AppendUint32(b, n.nlink)
		b = le.AppendUint32(b, n.rdev)
	case typeFifo, typeSocket:
		header(kind)
		b = le.AppendUint32(b, n.nlink)
	}
	t.inodes.write(b)
	return nil
}
