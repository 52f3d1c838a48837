// Package source opens the bundle a template names, in either of its
// forms: a bundle folder (`kpaas bake -o DIR`), or an export (`kpaas
// bundle export`): a tar, the first part (.000) of a split export, or the
// split export's .sha256sums list. An export is imported (every part's
// checksum and every blob's digest checked) into a temporary folder that
// Close removes. The builder, the provisioner and the data source share it.
package source

import (
	"archive/tar"
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"kpaas.dev/appliance/internal/bundle"
)

// Bundle is an opened bundle.
type Bundle struct {
	*bundle.Store
	// Imported tells whether the bundle was imported from an export into
	// a temporary folder (removed by Close).
	Imported bool
	tmp      string
}

// Close removes the temporary folder of an imported bundle. It may be
// called more than once.
func (b *Bundle) Close() error {
	if b == nil || b.tmp == "" {
		return nil
	}
	err := os.RemoveAll(b.tmp)
	b.tmp = ""
	return err
}

// IsFolder tells whether path is a bundle folder (and not an export).
func IsFolder(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.IsDir()
}

// Check reports why path cannot be a bundle, without reading it all: a
// folder must hold an OCI layout with a lock, an export must exist.
func Check(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		s, err := bundle.Open(path)
		if err != nil {
			return err
		}
		_, err = s.ReadLock()
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is neither a bundle folder nor an exported bundle (a tar)", path)
	}
	return nil
}

// Open opens the bundle at path. An export is imported into a temporary
// folder made under tmpParent (default: the system's temporary folder);
// the import is cancelled with ctx and leaves nothing behind on failure.
func Open(ctx context.Context, path, tmpParent string) (*Bundle, error) {
	if IsFolder(path) {
		s, err := bundle.Open(path)
		if err != nil {
			return nil, err
		}
		return &Bundle{Store: s}, nil
	}
	if _, err := os.Stat(path); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(tmpParent, ".kpaas-bundle-")
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(tmp, "bundle")
	if _, err := bundle.Import(ctx, path, dir); err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	s, err := bundle.Open(dir)
	if err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	return &Bundle{Store: s, Imported: true, tmp: tmp}, nil
}

// ReadLock reads a bundle's lock without importing an export: the lock
// is among the first entries of the tar (bundle.Export writes the
// metadata files first), so only the head of the first part is read.
func ReadLock(path string) (*bundle.Lock, error) {
	if IsFolder(path) {
		s, err := bundle.Open(path)
		if err != nil {
			return nil, err
		}
		return s.ReadLock()
	}
	first := path
	if strings.HasSuffix(path, bundle.SumsSuffix) {
		first = strings.TrimSuffix(path, bundle.SumsSuffix) + ".000"
	}
	f, err := os.Open(first)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	tr := tar.NewReader(bufio.NewReader(f))
	for range len(bundle.ExportedFiles) {
		hdr, err := tr.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, fmt.Errorf("%s is not an exported bundle: %w", path, err)
		}
		if hdr.Name != bundle.LockFile {
			continue
		}
		b, err := io.ReadAll(io.LimitReader(tr, 64<<20))
		if err != nil {
			return nil, fmt.Errorf("reading %s from %s: %w", bundle.LockFile, path, err)
		}
		var l bundle.Lock
		if err := json.Unmarshal(b, &l); err != nil {
			return nil, fmt.Errorf("parsing %s from %s: %w", bundle.LockFile, path, err)
		}
		return &l, nil
	}
	return nil, fmt.Errorf("%s is not an exported bundle: no %s among its first entries", path, bundle.LockFile)
}

// OSImage is the lock's OS image artifact (kind os), or nil.
func OSImage(l *bundle.Lock) *bundle.LockArtifact {
	for i, a := range l.Artifacts {
		if a.Kind == bundle.KindOS {
			return &l.Artifacts[i]
		}
	}
	return nil
}
