package squashfs

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Layer opens one layer of an OCI image: a tar stream, gzip- or
// zstd-compressed or plain (recognised by its first bytes). Open is called
// once, when the layer is applied; the reader may verify what it reads (a
// digest error from its last Read fails the build).
type Layer func() (io.ReadCloser, error)

// OCI whiteouts: ".wh.NAME" deletes NAME of the layers below, ".wh..wh..opq"
// in a folder hides everything the layers below put in it.
const (
	whiteoutPrefix = ".wh."
	whiteoutOpaque = ".wh..wh..opq"
)

// Tree is the file tree of an OCI image: its layers applied in order, as
// a container runtime's overlay would show them, held in memory as tar
// headers (names, modes, owners, times, link targets, device numbers) with
// the file contents spooled into one temporary file. Nothing is extracted,
// so files owned by root, setuid bits and device nodes are kept exactly
// while an ordinary user builds the image.
//
// ReadLayers makes a Tree; AddFile puts more files in it; Open reads a
// file of it (e.g. the kernel), Write and WriteFile make its squashfs
// image, as many times as wanted; Close removes the spool. Memory: about 200 bytes per entry.
type Tree struct {
	root  *lnode
	spool *os.File
	end   int64 // spool size
	layer int   // layer being applied (1-based)
}

// lnode is a name in the tree; hard links are names sharing one linode.
type lnode struct {
	name     string
	layer    int // the layer that last declared it (opaque folders keep only that layer's)
	children map[string]*lnode
	ino      *linode
}

// linode is what a name points at.
type linode struct {
	kind      uint16
	perm      uint16
	uid, gid  uint32
	mtime     int64
	size, off int64
	rdev      uint32
	target    string
}

// LayerOptions configure ReadLayers.
type LayerOptions struct {
	// TempDir is where file contents are spooled (default os.TempDir()):
	// it needs room for the unpacked size of all layers.
	TempDir string
}

// ReadLayers applies layers in order (OCI whiteouts and opaque folders
// included) and returns the resulting tree. The caller closes it.
func ReadLayers(ctx context.Context, layers []Layer, opts LayerOptions) (*Tree, error) {
	spool, err := os.CreateTemp(opts.TempDir, "kpaas-layers-*.spool")
	if err != nil {
		return nil, err
	}
	os.Remove(spool.Name()) // unlinked: gone when closed, whatever happens
	t := &Tree{spool: spool, root: &lnode{children: map[string]*lnode{}, ino: &linode{kind: typeDir, perm: 0o755}}}
	for i, open := range layers {
		t.layer = i + 1
		if err := t.apply(ctx, open); err != nil {
			spool.Close()
			return nil, fmt.Errorf("layer %d: %w", i+1, err)
		}
	}
	return t, nil
}

// Close removes the spooled contents.
func (t *Tree) Close() error { return t.spool.Close() }

func (t *Tree) apply(ctx context.Context, open Layer) error {
	rc, err := open()
	if err != nil {
		return err
	}
	defer rc.Close()
	r, err := decompress(rc)
	if err != nil {
		return err
	}
	defer r.Close()
	tr := tar.NewReader(r)
	w := bufio.NewWriterSize(t.spool, 1<<20)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("reading tar: %w", err)
		}
		if err := t.add(hdr, tr, w); err != nil {
			return fmt.Errorf("%s: %w", hdr.Name, err)
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	// drain: a verifying reader reports a digest mismatch only at the end
	_, err = io.Copy(io.Discard, rc)
	return err
}

// decompress recognises gzip and zstd by their magic numbers; anything
// else is read as a plain tar.
func decompress(r io.Reader) (io.ReadCloser, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	head, _ := br.Peek(4)
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		z, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		return z, nil
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		z, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		return z.IOReadCloser(), nil
	}
	return io.NopCloser(br), nil
}

// clean turns a tar name into a path relative to the root ("" is the root).
func clean(name string) string {
	p := path.Clean("/" + name)
	return strings.TrimPrefix(p, "/")
}

func (t *Tree) add(hdr *tar.Header, r io.Reader, spool *bufio.Writer) error {
	p := clean(hdr.Name)
	dir, base := path.Split(p)
	dir = strings.TrimSuffix(dir, "/")

	if base == whiteoutOpaque {
		parent := t.mkdirAll(dir)
		t.hideLower(parent)
		return nil
	}
	if name, ok := strings.CutPrefix(base, whiteoutPrefix); ok {
		parent := t.lookup(dir)
		if parent != nil && parent.children != nil {
			if c := parent.children[name]; c != nil && c.layer < t.layer {
				delete(parent.children, name)
			}
		}
		return nil
	}

	ino := &linode{
		perm:  uint16(hdr.Mode & 0o7777),
		uid:   uint32(hdr.Uid),
		gid:   uint32(hdr.Gid),
		mtime: max(hdr.ModTime.Unix(), 0),
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		ino.kind = typeDir
	case tar.TypeReg:
		ino.kind = typeFile
		ino.size, ino.off = hdr.Size, t.end
		n, err := io.Copy(spool, r)
		if err != nil {
			return err
		}
		if n != hdr.Size {
			return fmt.Errorf("%d bytes of content, header says %d", n, hdr.Size)
		}
		t.end += n
	case tar.TypeSymlink:
		ino.kind, ino.target = typeSymlink, hdr.Linkname
	case tar.TypeChar, tar.TypeBlock:
		ino.kind = typeChar
		if hdr.Typeflag == tar.TypeBlock {
			ino.kind = typeBlock
		}
		major, minor := uint32(hdr.Devmajor), uint32(hdr.Devminor)
		ino.rdev = (minor & 0xff) | (major << 8) | ((minor &^ 0xff) << 12)
	case tar.TypeFifo:
		ino.kind = typeFifo
	case tar.TypeLink:
		target := t.lookup(clean(hdr.Linkname))
		if target == nil {
			return fmt.Errorf("hard link to %s, which is not in the tree", hdr.Linkname)
		}
		if target.ino.kind == typeDir {
			return fmt.Errorf("hard link to the folder %s", hdr.Linkname)
		}
		ino = target.ino
	default:
		return fmt.Errorf("unsupported tar entry type %q", hdr.Typeflag)
	}

	if p == "" { // the root folder itself
		if ino.kind != typeDir {
			return errors.New("the root is not a folder")
		}
		*t.root.ino = *ino
		return nil
	}
	parent := t.mkdirAll(dir)
	old := parent.children[base]
	if old != nil && old.ino.kind == typeDir && ino.kind == typeDir {
		*old.ino = *ino // a folder declared again: new attributes, same content
		old.layer = t.layer
		return nil
	}
	n := &lnode{name: base, layer: t.layer, ino: ino}
	if ino.kind == typeDir {
		n.children = map[string]*lnode{}
	}
	parent.children[base] = n
	return nil
}

// lookup finds the node at p, without following symlinks.
func (t *Tree) lookup(p string) *lnode {
	n := t.root
	if p == "" {
		return n
	}
	for _, part := range strings.Split(p, "/") {
		if n.children == nil {
			return nil
		}
		if n = n.children[part]; n == nil {
			return nil
		}
	}
	return n
}

// mkdirAll returns the folder at p, making missing folders (0755, root)
// and replacing anything that is not a folder on the way.
func (t *Tree) mkdirAll(p string) *lnode {
	n := t.root
	if p == "" {
		return n
	}
	for _, part := range strings.Split(p, "/") {
		c := n.children[part]
		if c == nil || c.ino.kind != typeDir {
			c = &lnode{name: part, layer: t.layer, children: map[string]*lnode{},
				ino: &linode{kind: typeDir, perm: 0o755}}
			n.children[part] = c
		}
		n = c
	}
	return n
}

// hideLower removes from d what lower layers put there, keeping what the
// current layer declared (and, in folders it declared, only its entries).
func (t *Tree) hideLower(d *lnode) {
	for name, c := range d.children {
		switch {
		case c.layer < t.layer:
			delete(d.children, name)
		case c.children != nil:
			t.hideLower(c)
		}
	}
}

// Open returns the content of the regular file at name (slash-separated,
// relative to the root), following symlinks inside the tree.
func (t *Tree) Open(name string) (*io.SectionReader, error) {
	n, err := t.resolve(name)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	if n.ino.kind != typeFile {
		return nil, &fs.PathError{Op: "open", Path: name, Err: errors.New("not a regular file")}
	}
	return io.NewSectionReader(t.spool, n.ino.off, n.ino.size), nil
}

// resolve walks p from the root, following symlinks (at most 40).
func (t *Tree) resolve(p string) (*lnode, error) {
	hops := 0
	parts := strings.Split(clean(p), "/")
	var stack []*lnode // folders from the root to the current one
	cur := t.root
	for len(parts) > 0 {
		part := parts[0]
		parts = parts[1:]
		switch part {
		case "", ".":
			continue
		case "..":
			if len(stack) > 0 {
				cur, stack = stack[len(stack)-1], stack[:len(stack)-1]
			}
			continue
		}
		if cur.ino.kind != typeDir {
			return nil, errors.New("not a folder on the way")
		}
		next := cur.children[part]
		if next == nil {
			return nil, fs.ErrNotExist
		}
		if next.ino.kind == typeSymlink {
			if hops++; hops > 40 {
				return nil, errors.New("too many levels of symbolic links")
			}
			target := next.ino.target
			if strings.HasPrefix(target, "/") {
				cur, stack = t.root, nil
			}
			parts = append(strings.Split(target, "/"), parts...)
			continue
		}
		stack = append(stack, cur)
		cur = next
	}
	return cur, nil
}

// Write writes the squashfs image of the tree to w, as the package's Write
// does for a folder (Options.Exclude does not apply).
func (t *Tree) Write(ctx context.Context, w io.WriterAt, opts Options) (Stats, error) {
	if err := opts.normalize(); err != nil {
		return Stats{}, err
	}
	sc := &scanner{opts: &opts}
	root := t.nodes(sc)
	sc.number(root)
	return writeTree(ctx, w, root, sc, opts)
}

// WriteFile writes the image to path, through a temp file beside it and a
// rename (internal/atomicfile).
func (t *Tree) WriteFile(ctx context.Context, path string, opts Options) (Stats, error) {
	return writeFile(path, func(f *os.File) (Stats, error) { return t.Write(ctx, f, opts) })
}

// nodes converts the tree into the writer's nodes: children sorted by
// name, and for each group of hard links the first name in depth-first
// order is the primary, as the folder scanner does.
func (t *Tree) nodes(sc *scanner) *node {
	primaries := map[*linode]*node{}
	var conv func(l *lnode, p string, parent *node) *node
	conv = func(l *lnode, p string, parent *node) *node {
		in := l.ino
		if prim := primaries[in]; prim != nil {
			prim.nlink++
			return &node{name: l.name, path: p, kind: in.kind, parent: parent, link: prim}
		}
		n := &node{name: l.name, path: p, kind: in.kind, perm: in.perm, uid: in.uid, gid: in.gid,
			nlink: 1, size: in.size, rdev: in.rdev, target: in.target, parent: parent}
		if o := sc.opts.Owner; o != nil {
			n.uid, n.gid = o.UID, o.GID
		}
		mt := in.mtime
		if !sc.opts.ModTime.IsZero() && mt > sc.opts.ModTime.Unix() {
			mt = sc.opts.ModTime.Unix()
		}
		sc.newest = max(sc.newest, mt)
		n.mtime = uint32(mt)
		switch in.kind {
		case typeFile:
			n.spool, n.off = t.spool, in.off
			sc.files++
			sc.bytes += in.size
			primaries[in] = n
		case typeDir:
			names := make([]string, 0, len(l.children))
			for name := range l.children {
				names = append(names, name)
			}
			sort.Strings(names)
			for _, name := range names {
				c := conv(l.children[name], path.Join(p, name), n)
				n.children = append(n.children, c)
				if c.kind == typeDir {
					n.subdirs++
				}
			}
		default:
			primaries[in] = n
		}
		return n
	}
	return conv(t.root, "/", nil)
}

// AddFile puts a regular file into the tree after its layers, as a last
// layer with one entry would, but more strictly. hdr.Name is the path
// (slash-separated, from the root; a leading "/" is allowed), hdr.Mode the
// permission bits (07777), hdr.Uid, hdr.Gid and hdr.ModTime its owner and
// time, hdr.Size the length of r's content, which is spooled as layer
// files are; hdr.Typeflag is TypeReg or unset.
//
// Missing parent folders are made (0755, root, hdr.ModTime). Symlinks
// among the parents are followed inside the tree, as the node's kernel
// would follow them: on a merged-/usr image, /bin/x lands in /usr/bin/x.
// The file replaces a file, device node or symlink of that name (not a
// symlink to a folder). It never replaces a folder nor goes through a
// parent that is not a folder: that is an error, and so is an error from
// r (a verifying reader's digest mismatch) or a content that is not
// hdr.Size bytes; after an error the tree is as it was.
func (t *Tree) AddFile(hdr *tar.Header, r io.Reader) error {
	p := clean(hdr.Name)
	dir, base := path.Split(p)
	dir = strings.TrimSuffix(dir, "/")
	switch {
	case p == "":
		return errors.New("adding a file: no name")
	case hdr.Typeflag != tar.TypeReg && hdr.Typeflag != 0: // 0: unset
		return fmt.Errorf("adding /%s: tar type %q is not a regular file", p, hdr.Typeflag)
	case strings.HasPrefix(base, whiteoutPrefix):
		return fmt.Errorf("adding /%s: names starting with %s are OCI whiteouts", p, whiteoutPrefix)
	}
	mtime := max(hdr.ModTime.Unix(), 0)
	// check first, spool next, change the tree last: an error changes nothing
	real, _, err := t.walkDir(dir, false, mtime)
	if err != nil {
		return fmt.Errorf("adding /%s: %w", p, err)
	}
	full := path.Join(real, base)
	if old := t.lookup(full); old != nil && old.ino.kind == typeDir {
		return fmt.Errorf("adding /%s: it would replace the folder /%s", p, full)
	} else if old != nil && old.ino.kind == typeSymlink {
		if n, err := t.resolve(full); err == nil && n.ino.kind == typeDir {
			return fmt.Errorf("adding /%s: it would replace /%s, a symlink to a folder", p, full)
		}
	}
	if _, err := t.spool.Seek(t.end, io.SeekStart); err != nil {
		return err
	}
	w := bufio.NewWriterSize(t.spool, 1<<20)
	n, err := io.Copy(w, r)
	if err == nil {
		err = w.Flush()
	}
	if err != nil {
		return fmt.Errorf("adding /%s: %w", p, err)
	}
	if n != hdr.Size {
		return fmt.Errorf("adding /%s: %d bytes of content, header says %d", p, n, hdr.Size)
	}
	ino := &linode{kind: typeFile, perm: uint16(hdr.Mode & 0o7777), uid: uint32(hdr.Uid), gid: uint32(hdr.Gid),
		mtime: mtime, size: n, off: t.end}
	t.end += n
	_, parent, _ := t.walkDir(dir, true, mtime) // the same walk: it cannot fail now
	parent.children[base] = &lnode{name: base, layer: t.layer, ino: ino}
	return nil
}

// walkDir walks the folder dir from the root, following symlinks (at most
// 40), and returns its path without symlinks and its node. Missing folders
// are made (0755, root, mtime) with create, else walked through as empty
// folders that are not added to the tree.
func (t *Tree) walkDir(dir string, create bool, mtime int64) (string, *lnode, error) {
	newDir := func(name string) *lnode {
		return &lnode{name: name, layer: t.layer, children: map[string]*lnode{},
			ino: &linode{kind: typeDir, perm: 0o755, mtime: mtime}}
	}
	var names []string // the real path walked so far
	cur, hops := t.root, 0
	parts := strings.Split(dir, "/")
	for len(parts) > 0 {
		part := parts[0]
		parts = parts[1:]
		switch part {
		case "", ".":
			continue
		case "..":
			if len(names) > 0 {
				names = names[:len(names)-1]
				if cur = t.lookup(strings.Join(names, "/")); cur == nil { // not made (!create)
					cur = newDir(names[len(names)-1])
				}
			}
			continue
		}
		next := cur.children[part]
		switch {
		case next == nil:
			next = newDir(part)
			if create {
				cur.children[part] = next
			}
		case next.ino.kind == typeSymlink:
			if hops++; hops > 40 {
				return "", nil, errors.New("too many levels of symbolic links")
			}
			if strings.HasPrefix(next.ino.target, "/") {
				names, cur = nil, t.root
			}
			parts = append(strings.Split(next.ino.target, "/"), parts...)
			continue
		case next.ino.kind != typeDir:
			return "", nil, fmt.Errorf("/%s is not a folder", path.Join(append(names, part)...))
		}
		names = append(names, part)
		cur = next
	}
	return strings.Join(names, "/"), cur, nil
}
