package bundle

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"kpaas.dev/appliance/internal/atomicfile"
)

// Bundle writes go through internal/atomicfile: a temp file named
// atomicfile.TempPrefix+NAME+"-*" beside the target, fsynced and renamed
// into place. A process killed mid-write (SIGKILL, power) leaves such
// files behind; they are never bundle content.

// TempFiles lists the temp files an interrupted write left in the bundle
// folder and its blobs folder, with their total size.
func (s *Store) TempFiles() (paths []string, size int64) {
	for _, dir := range []string{s.root, s.Path(BlobsDir + "/sha256")} {
		des, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, de := range des {
			if !de.Type().IsRegular() || !strings.HasPrefix(de.Name(), atomicfile.TempPrefix) {
				continue
			}
			fi, err := de.Info()
			if err != nil {
				continue
			}
			paths = append(paths, filepath.Join(dir, de.Name()))
			size += fi.Size()
		}
	}
	return paths, size
}

// RemoveTemp removes the temp files an interrupted write left behind
// (TempFiles). Only one process writes a bundle at a time: a bake calls
// it when it opens the bundle.
func (s *Store) RemoveTemp() (n int, size int64, err error) {
	paths, size := s.TempFiles()
	for _, p := range paths {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return n, size, fmt.Errorf("removing temp file: %w", err)
		}
		n++
	}
	return n, size, nil
}

// DigestError reports content that does not match its digest or size.
type DigestError struct {
	Blob     v1.Hash // the expected digest
	Got      v1.Hash // the digest of the bytes actually read
	WantSize int64   // -1 when unknown
	GotSize  int64
}

func (e *DigestError) Error() string {
	if e.WantSize >= 0 && e.WantSize != e.GotSize {
		return fmt.Sprintf("blob %s: size %d, want %d", e.Blob, e.GotSize, e.WantSize)
	}
	return fmt.Sprintf("blob %s: content has digest %s", e.Blob, e.Got)
}

// verifyingReader hashes what passes through it and checks it at EOF.
type verifyingReader struct {
	r    io.ReadCloser
	want v1.Hash
	size int64
	n    int64
	h    hash.Hash
	err  error
}

// NewVerifyingReader wraps rc so that reading it to the end returns a
// *DigestError instead of io.EOF when the content does not match digest h
// (and size, when size >= 0). Reading past size fails at once.
func NewVerifyingReader(rc io.ReadCloser, h v1.Hash, size int64) io.ReadCloser {
	return &verifyingReader{r: rc, want: h, size: size, h: sha256.New()}
}

func (v *verifyingReader) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	n, err := v.r.Read(p)
	v.h.Write(p[:n])
	v.n += int64(n)
	if v.size >= 0 && v.n > v.size {
		v.err = &DigestError{Blob: v.want, WantSize: v.size, GotSize: v.n}
		return n, v.err
	}
	if err == io.EOF {
		got := hex.EncodeToString(v.h.Sum(nil))
		if got != v.want.Hex || (v.size >= 0 && v.n != v.size) {
			v.err = &DigestError{Blob: v.want, Got: v1.Hash{Algorithm: "sha256", Hex: got}, WantSize: v.size, GotSize: v.n}
			return n, v.err
		}
	}
	if err != nil {
		v.err = err
	}
	return n, err
}

func (v *verifyingReader) Close() error { return v.r.Close() }
