package bake

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// Kustomize renders the kustomization spec (relative to base) as
// `kustomize build` does, with kustomize's library: the nodes need no
// kustomize. spec may be ARCHIVE.tar.gz//SUBDIR: the archive is unpacked
// into a temp folder first (a vendored upstream tree kept as one file).
func Kustomize(base, spec string) ([]byte, error) {
	dir := filepath.Join(base, filepath.FromSlash(spec))
	if archive, sub, ok := strings.Cut(spec, "//"); ok && (strings.HasSuffix(archive, ".tar.gz") || strings.HasSuffix(archive, ".tgz")) {
		archive = filepath.Join(base, filepath.FromSlash(archive))
		tmp, err := os.MkdirTemp("", "kpaas-kustomize-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(tmp)
		if err := untar(archive, tmp); err != nil {
			return nil, fmt.Errorf("unpacking %s: %w", archive, err)
		}
		dir = filepath.Join(tmp, filepath.FromSlash(sub))
	}
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build: %w", err)
	}
	return m.AsYaml()
}

// untar unpacks a gzipped tar of folders and regular files into dir,
// refusing paths that leave it.
func untar(archive, dir string) error {
	f, err := os.Open(archive)
	if err != nil {
		return err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return err
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		name := filepath.Clean(filepath.FromSlash(h.Name))
		if filepath.IsAbs(name) || name == ".." || strings.HasPrefix(name, ".."+string(filepath.Separator)) {
			return fmt.Errorf("%q leaves the archive's folder", h.Name)
		}
		p := filepath.Join(dir, name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			w, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
			if err != nil {
				return err
			}
			if _, err := io.Copy(w, tr); err != nil {
				w.Close()
				return err
			}
			if err := w.Close(); err != nil {
				return err
			}
		}
	}
}
