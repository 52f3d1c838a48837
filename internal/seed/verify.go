package seed

import (
	"errors"
	"io"
	"os"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"kpaas.dev/appliance/internal/bundle"
)

// fileID tells one version of a blob file from another: a file replaced or
// rewritten on disk changes size or modification time and is hashed again.
type fileID struct {
	size  int64
	mtime int64 // UnixNano
}

// verdict is the remembered outcome of hashing one version of a blob: nil
// (good) or a *bundle.DigestError. I/O errors are not remembered.
type verdict struct {
	id  fileID
	err error
}

// check is a hash in progress; requests for the same blob wait for it.
type check struct {
	id   fileID
	done chan struct{}
	err  error
}

// verifier remembers which blobs have been hashed and found good.
type verifier struct {
	mu       sync.Mutex
	verdicts map[v1.Hash]verdict
	running  map[v1.Hash]*check
}

func newVerifier() *verifier {
	return &verifier{verdicts: map[v1.Hash]verdict{}, running: map[v1.Hash]*check{}}
}

// verify reports whether f, the file of blob h, holds the right content,
// hashing it only when this version of the file has not been hashed yet.
// Concurrent callers for the same blob share one hash. It reads f with
// ReadAt, so f's offset is left alone.
func (v *verifier) verify(h v1.Hash, want int64, f *os.File) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() != want {
		return &bundle.DigestError{Blob: h, WantSize: want, GotSize: fi.Size()}
	}
	id := fileID{size: fi.Size(), mtime: fi.ModTime().UnixNano()}

	v.mu.Lock()
	if vd, ok := v.verdicts[h]; ok && vd.id == id {
		v.mu.Unlock()
		return vd.err
	}
	if c, ok := v.running[h]; ok && c.id == id {
		v.mu.Unlock()
		<-c.done
		return c.err
	}
	c := &check{id: id, done: make(chan struct{})}
	v.running[h] = c
	v.mu.Unlock()

	c.err = hashFile(h, want, f)
	v.mu.Lock()
	var de *bundle.DigestError
	if c.err == nil || errors.As(c.err, &de) {
		v.verdicts[h] = verdict{id: id, err: c.err}
	}
	if v.running[h] == c {
		delete(v.running, h)
	}
	v.mu.Unlock()
	close(c.done)
	return c.err
}

// hashFile reads the whole of f through the bundle's verifying reader.
func hashFile(h v1.Hash, size int64, f *os.File) error {
	vr := bundle.NewVerifyingReader(io.NopCloser(io.NewSectionReader(f, 0, size+1)), h, size)
	_, err := io.Copy(io.Discard, vr)
	return err
}

// openVerified opens the file of blob h for serving, after checking (once
// per version of the file) that its content matches h.
func (s *Server) openVerified(h v1.Hash, size int64) (*os.File, error) {
	p, err := s.store.BlobPath(h)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	if err := s.verified.verify(h, size, f); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
