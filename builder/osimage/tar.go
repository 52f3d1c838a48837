package osimage

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/klauspost/compress/gzip"

	"kpaas.dev/appliance/internal/atomicfile"
)

// tarWriter writes a deterministic layer: entries in the order given (the
// callers add them sorted), owned by numeric ids only, every time set to
// the epoch.
type tarWriter struct {
	tw    *tar.Writer
	mtime time.Time
	// skipped counts what a layer cannot carry (device nodes, sockets,
	// FIFOs); the OS gets /dev from devtmpfs.
	skipped int
}

// writeLayer writes a gzip-compressed layer to path with fill and returns
// its digests. The file is written atomically (internal/atomicfile).
func writeLayer(path string, fill func(*tarWriter) error, epoch int64) (Layer, error) {
	digest, diffID := sha256.New(), sha256.New()
	var size int64
	err := atomicfile.Write(path, 0o644, func(f *os.File) error {
		counted := &countingWriter{w: io.MultiWriter(f, digest)}
		gz, err := gzip.NewWriterLevel(counted, gzip.DefaultCompression)
		if err != nil {
			return err
		}
		t := &tarWriter{tw: tar.NewWriter(io.MultiWriter(gz, diffID)), mtime: time.Unix(epoch, 0).UTC()}
		if err := fill(t); err != nil {
			return err
		}
		for _, c := range []io.Closer{t.tw, gz} {
			if err := c.Close(); err != nil {
				return err
			}
		}
		size = counted.n
		return nil
	})
	if err != nil {
		return Layer{}, err
	}
	return Layer{File: filepath.Base(path), Digest: sum(digest), DiffID: sum(diffID), Size: size}, nil
}

func sum(h hash.Hash) string { return "sha256:" + hex.EncodeToString(h.Sum(nil)) }

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// volatile are directories whose content never goes into a layer: the
// running system mounts over them.
var volatile = map[string]bool{"dev": true, "proc": true, "sys": true, "run": true, "tmp": true}

// addTree adds the tree at root, sorted, as the layer's root.
// Hard-linked files are stored as separate copies: the squashfs and ext4
// writers the media use cannot make hard links.
func (t *tarWriter) addTree(root string) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		if top, _, nested := strings.Cut(rel, "/"); nested && volatile[top] {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		link := ""
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		case fi.Mode()&(fs.ModeDevice|fs.ModeCharDevice|fs.ModeNamedPipe|fs.ModeSocket) != 0:
			t.skipped++
			return nil
		}
		hdr, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		hdr.Name = rel
		if fi.IsDir() {
			hdr.Name += "/"
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			hdr.Uid, hdr.Gid = int(st.Uid), int(st.Gid)
		}
		if err := t.header(hdr); err != nil {
			return err
		}
		if hdr.Typeflag != tar.TypeReg {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := io.Copy(t.tw, f); err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		return nil
	})
}

func (t *tarWriter) header(hdr *tar.Header) error {
	hdr.Uname, hdr.Gname = "", ""
	hdr.ModTime, hdr.AccessTime, hdr.ChangeTime = t.mtime, time.Time{}, time.Time{}
	hdr.Format = tar.FormatPAX
	return t.tw.WriteHeader(hdr)
}

// dir, file and symlink add single root-owned entries.
func (t *tarWriter) dir(name string) error {
	return t.header(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: 0o755})
}

func (t *tarWriter) file(name string, mode int64, data []byte) error {
	if err := t.header(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data))}); err != nil {
		return err
	}
	_, err := t.tw.Write(data)
	return err
}

func (t *tarWriter) symlink(name, target string) error {
	return t.header(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777})
}
