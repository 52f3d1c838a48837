package source

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// isOCIArchive reports whether the tarball at p holds an OCI image layout
// (an oci-layout file at its root).
func isOCIArchive(p string) (bool, error) {
	f, err := os.Open(p)
	if err != nil {
		return false, err
	}
	defer f.Close()
	tr := tar.NewReader(f) // skips file bodies by seeking
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("reading %s: %w", p, err)
		}
		if path.Clean(h.Name) == "oci-layout" {
			return true, nil
		}
	}
}

// unpackOCIArchive unpacks the OCI archive at p into a folder under
// cacheDir named after its path, size and modification time, once.
func unpackOCIArchive(p, cacheDir string) (string, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return "", err
	}
	abs, _ := filepath.Abs(p)
	key := sha256.Sum256([]byte(fmt.Sprintf("%s\x00%d\x00%d", abs, fi.Size(), fi.ModTime().UnixNano())))
	if cacheDir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			return "", fmt.Errorf("unpacking %s: %w", p, err)
		}
		cacheDir = filepath.Join(base, "kpaas", "oci-archives")
	}
	dir := filepath.Join(cacheDir, hex.EncodeToString(key[:16]))
	if _, err := os.Stat(filepath.Join(dir, "oci-layout")); err == nil {
		return dir, nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(cacheDir, ".unpack-")
	if err != nil {
		return "", err
	}
	if err := untarLayout(p, tmp); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("unpacking OCI archive %s: %w", p, err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		os.RemoveAll(tmp)
		if _, serr := os.Stat(filepath.Join(dir, "oci-layout")); serr == nil {
			return dir, nil // unpacked concurrently
		}
		return "", err
	}
	return dir, nil
}

// untarLayout extracts the regular files and folders of an OCI layout
// tarball into dir, refusing anything that would land outside it.
// Content is verified later, when blobs are copied into a bundle.
func untarLayout(p, dir string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		name := path.Clean(strings.TrimPrefix(h.Name, "./"))
		if name == "." {
			continue
		}
		if path.IsAbs(name) || name == ".." || strings.HasPrefix(name, "../") {
			return fmt.Errorf("entry %q escapes the archive", h.Name)
		}
		target := filepath.Join(dir, filepath.FromSlash(name))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			out, err := os.OpenFile(target, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
			if err != nil {
				return err
			}
			_, err = io.Copy(out, tr)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		default:
			return fmt.Errorf("entry %q: unsupported type %q in an OCI archive", h.Name, h.Typeflag)
		}
	}
}
