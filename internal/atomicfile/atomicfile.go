// Package atomicfile is the one way kpaas and kpaas-agent replace a file:
// write a temp file in the same folder, fsync it, set its mode, rename it
// over the target and fsync the folder. A reader (or the next boot after a
// power cut) sees the old file or the whole new one, never a part; a temp
// file left by a crash is named ".tmp-<name>-*" so cleaners can find it.
package atomicfile

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
)

// TempPrefix starts the name of every temp file this package creates.
const TempPrefix = ".tmp-"

// Option configures one write.
type Option func(*options)

type options struct {
	noDirSync bool
}

// NoDirSync leaves out the fsync of the folder after the rename. A caller
// that writes many files into one folder passes it and calls SyncDir once
// when done (a bundle's blobs): until then a power cut may lose the
// renames, never make a file partial.
func NoDirSync() Option { return func(o *options) { o.noDirSync = true } }

// WriteFile replaces path with data, created with mode (the umask does not
// apply). Missing parent folders are created 0755.
func WriteFile(path string, data []byte, mode os.FileMode, opts ...Option) error {
	return Write(path, mode, func(f *os.File) error {
		_, err := f.Write(data)
		return err
	}, opts...)
}

// Write replaces path with what fill writes into a temp file beside it.
// When fill fails, the temp file is removed and path is untouched.
func Write(path string, mode os.FileMode, fill func(*os.File) error, opts ...Option) (err error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, TempPrefix+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := f.Chmod(mode); err != nil {
		return err
	}
	if err := fill(f); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	if o.noDirSync {
		return nil
	}
	return SyncDir(dir)
}

// Update writes data to path only when the file is missing or differs in
// content or mode, and reports whether it wrote. Callers that re-run (the
// agent's phases on every boot) use it to leave an unchanged file alone.
func Update(path string, data []byte, mode os.FileMode) (changed bool, err error) {
	if Same(path, data, mode) {
		return false, nil
	}
	return true, WriteFile(path, data, mode)
}

// Same reports whether path holds exactly data with permission bits mode.
func Same(path string, data []byte, mode os.FileMode) bool {
	fi, err := os.Lstat(path)
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != mode.Perm() || fi.Size() != int64(len(data)) {
		return false
	}
	old, err := os.ReadFile(path)
	return err == nil && bytes.Equal(old, data)
}

// SyncDir fsyncs a folder, making renames and creations in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, fs.ErrInvalid) {
		return err
	}
	return nil
}
