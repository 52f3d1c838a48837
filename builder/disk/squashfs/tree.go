package squashfs

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Basic inode types; directory entries always carry the basic type.
const (
	typeDir     = 1
	typeFile    = 2
	typeSymlink = 3
	typeBlock   = 4
	typeChar    = 5
	typeFifo    = 6
	typeSocket  = 7
	// extended ("long") variants, used when a basic inode cannot hold a value
	typeLDir  = 8
	typeLFile = 9
)

// node is one entry of the source tree. Hard links share one primary node:
// every other name points at it through link.
type node struct {
	name     string
	path     string // host path
	kind     uint16 // basic inode type
	perm     uint16 // permission bits (07777)
	uid, gid uint32
	mtime    uint32
	size     int64
	rdev     uint32 // encoded device number
	target   string // symlink target
	children []*node
	parent   *node
	link     *node // primary node of a hard link, nil for the primary itself
	nlink    uint32
	ino      uint32

	// spool, when set, holds the file's content at off (trees assembled
	// from layers); otherwise it is read from path
	spool io.ReaderAt
	off   int64

	// data, filled while writing file blocks: the data blocks, and the
	// fragment block (its index) and offset in it of the tail when
	// inFragment
	start      uint64
	blocks     []uint32
	sparse     uint64
	frag       uint32
	fragOffset uint32
	inFragment bool

	// inode reference, filled when the inode is written
	ref     uint64
	written bool

	// directory listing position, filled when the listing is written
	dirBlock  uint32
	dirOffset uint16
	dirSize   uint32
	subdirs   uint32
}

func (n *node) primary() *node {
	if n.link != nil {
		return n.link
	}
	return n
}

// scan reads the tree under root (never following symlinks) into nodes.
// Entries are sorted by name, byte-wise, as the kernel's lookup expects.
type scanner struct {
	opts   *Options
	root   string
	links  map[[2]uint64]*node
	inodes uint32
	newest int64
	files  int
	bytes  int64
}

func (s *scanner) scan(root string) (*node, error) {
	fi, err := os.Lstat(root)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", root)
	}
	s.links = map[[2]uint64]*node{}
	s.root = root
	n, err := s.node(root, "", fi)
	if err != nil {
		return nil, err
	}
	if err := s.walk(n); err != nil {
		return nil, err
	}
	s.number(n)
	return n, nil
}

func (s *scanner) walk(dir *node) error {
	entries, err := os.ReadDir(dir.path)
	if err != nil {
		return err
	}
	for _, e := range entries { // os.ReadDir sorts by name
		p := filepath.Join(dir.path, e.Name())
		if s.opts.Exclude != nil {
			if rel, err := filepath.Rel(s.root, p); err == nil && s.opts.Exclude(filepath.ToSlash(rel)) {
				continue
			}
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		c, err := s.node(p, e.Name(), fi)
		if err != nil {
			return err
		}
		c.parent = dir
		dir.children = append(dir.children, c)
		if c.kind == typeDir {
			dir.subdirs++
			if err := s.walk(c); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *scanner) node(p, name string, fi fs.FileInfo) (*node, error) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil, fmt.Errorf("%s: no unix file status", p)
	}
	n := &node{name: name, path: p, perm: uint16(st.Mode & 07777), uid: st.Uid, gid: st.Gid, nlink: 1}
	if o := s.opts.Owner; o != nil {
		n.uid, n.gid = o.UID, o.GID
	}
	mt := fi.ModTime().Unix()
	if !s.opts.ModTime.IsZero() && mt > s.opts.ModTime.Unix() {
		mt = s.opts.ModTime.Unix()
	}
	if mt < 0 {
		mt = 0
	}
	if mt > s.newest {
		s.newest = mt
	}
	n.mtime = uint32(mt)
	m := fi.Mode()
	switch {
	case m.IsDir():
		n.kind = typeDir
	case m.IsRegular():
		n.kind = typeFile
		n.size = fi.Size()
	case m&fs.ModeSymlink != 0:
		n.kind = typeSymlink
		t, err := os.Readlink(p)
		if err != nil {
			return nil, err
		}
		n.target = t
	case m&fs.ModeNamedPipe != 0:
		n.kind = typeFifo
	case m&fs.ModeSocket != 0:
		n.kind = typeSocket
	case m&fs.ModeCharDevice != 0:
		n.kind = typeChar
		n.rdev = encodeDev(uint64(st.Rdev))
	case m&fs.ModeDevice != 0:
		n.kind = typeBlock
		n.rdev = encodeDev(uint64(st.Rdev))
	default:
		return nil, fmt.Errorf("%s: unsupported file type %s", p, m.Type())
	}
	if n.kind != typeDir && st.Nlink > 1 {
		key := [2]uint64{uint64(st.Dev), uint64(st.Ino)}
		if prim, ok := s.links[key]; ok {
			n.link = prim
			prim.nlink++
			return n, nil
		}
		s.links[key] = n
	}
	if n.kind == typeFile {
		s.files++
		s.bytes += n.size
	}
	return n, nil
}

// number gives every inode a number, breadth first, so the children of a
// directory get consecutive numbers and directory headers stay compact.
func (s *scanner) number(root *node) {
	var next uint32 = 1
	root.ino = next
	next++
	queue := []*node{root}
	for len(queue) > 0 {
		d := queue[0]
		queue = queue[1:]
		for _, c := range d.children {
			p := c.primary()
			if p.ino == 0 {
				p.ino = next
				next++
			}
			if c.kind == typeDir {
				queue = append(queue, c)
			}
		}
	}
	s.inodes = next - 1
}

// encodeDev is the kernel's new_encode_dev.
func encodeDev(dev uint64) uint32 {
	major, minor := unix.Major(dev), unix.Minor(dev)
	return (minor & 0xff) | (major << 8) | ((minor &^ 0xff) << 12)
}

func unixTime(t time.Time) uint32 {
	u := t.Unix()
	if u < 0 {
		return 0
	}
	return uint32(u)
}
