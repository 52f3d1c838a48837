package source

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"kpaas.dev/appliance/internal/ref"
)

// Mirror is a local folder that resolves a manifest's references with no
// network. Its layout (see docs/mirror.md):
//
//	MIRROR/
//	  <any folder>/oci-layout …   OCI image layouts (images and OCI charts by full reference)
//	  <any>.tar                   docker-archive tarballs (by RepoTags)
//	  charts/<name>-<version>.tgz Helm chart packages (for http(s) repository sources)
//	  files/<file>                host files, found by sha256 (files/SHA256SUMS is used when present)
//
// Folders are searched up to four levels deep; kpaas bundles are OCI
// layouts, so a bundle can serve as a mirror for another bake.
type Mirror struct {
	Dir string

	once    sync.Once
	err     error
	images  Chain
	charts  map[string]string // "name-version" → path
	fileDir string

	filesOnce sync.Once
	filesErr  error
	bySHA     map[string]string // sha256 hex → path
}

func (m *Mirror) String() string { return "mirror:" + m.Dir }

func (m *Mirror) scan() error {
	m.once.Do(func() {
		fi, err := os.Stat(m.Dir)
		if err != nil || !fi.IsDir() {
			m.err = fmt.Errorf("mirror %s: not a folder", m.Dir)
			return
		}
		// The folder itself may be a link (a mirror shared between work
		// trees); WalkDir does not follow a link, even at its root.
		root, err := filepath.EvalSymlinks(m.Dir)
		if err != nil {
			m.err = fmt.Errorf("mirror %s: %w", m.Dir, err)
			return
		}
		m.charts = map[string]string{}
		var layouts, archives []string
		err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			depth := strings.Count(rel, string(filepath.Separator))
			switch {
			case d.IsDir() && rel == "files":
				m.fileDir = p
				return filepath.SkipDir
			case d.IsDir() && (d.Name() == "blobs" || depth > 4):
				return filepath.SkipDir
			case d.IsDir():
				if _, err := os.Stat(filepath.Join(p, "oci-layout")); err == nil {
					layouts = append(layouts, p)
					return filepath.SkipDir
				}
			case strings.HasSuffix(d.Name(), ".tgz"):
				m.charts[strings.TrimSuffix(d.Name(), ".tgz")] = p
			case strings.HasSuffix(d.Name(), ".tar"):
				archives = append(archives, p)
			}
			return nil
		})
		if err != nil {
			m.err = fmt.Errorf("scanning mirror %s: %w", m.Dir, err)
			return
		}
		sort.Strings(layouts)
		sort.Strings(archives)
		for _, l := range layouts {
			m.images = append(m.images, &Layout{Dir: l})
		}
		for _, a := range archives {
			m.images = append(m.images, &Archive{Path: a})
		}
	})
	return m.err
}

// Resolve implements ImageSource over every layout and archive found.
func (m *Mirror) Resolve(ctx context.Context, r ref.Ref) (*Image, error) {
	if err := m.scan(); err != nil {
		return nil, err
	}
	img, err := m.images.Resolve(ctx, r)
	if err != nil {
		return nil, fmt.Errorf("%s: not in %s: %w", r, m, ErrNotFound)
	}
	return img, nil
}

// Chart returns the path of charts/<name>-<version>.tgz, or ErrNotFound.
func (m *Mirror) Chart(name, version string) (string, error) {
	if err := m.scan(); err != nil {
		return "", err
	}
	if p, ok := m.charts[name+"-"+version]; ok {
		return p, nil
	}
	return "", fmt.Errorf("chart %s %s: not in %s: %w", name, version, m, ErrNotFound)
}

// File returns the path of a file with the given sha256 under files/.
func (m *Mirror) File(sha string) (string, error) {
	if err := m.scan(); err != nil {
		return "", err
	}
	m.filesOnce.Do(func() { m.filesErr = m.indexFiles() })
	if m.filesErr != nil {
		return "", m.filesErr
	}
	if p, ok := m.bySHA[sha]; ok {
		return p, nil
	}
	return "", fmt.Errorf("file sha256:%s: not in %s: %w", sha, m, ErrNotFound)
}

// indexFiles maps sha256 → path: from files/SHA256SUMS when present
// (the content is still verified when the file is copied), otherwise by
// hashing each file once.
func (m *Mirror) indexFiles() error {
	m.bySHA = map[string]string{}
	if m.fileDir == "" {
		return nil
	}
	if f, err := os.Open(filepath.Join(m.fileDir, "SHA256SUMS")); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			sum, file, ok := strings.Cut(sc.Text(), "  ")
			if !ok || len(sum) != 64 || strings.Contains(file, "..") {
				continue
			}
			m.bySHA[sum] = filepath.Join(m.fileDir, strings.TrimPrefix(file, "*"))
		}
		return sc.Err()
	}
	return filepath.WalkDir(m.fileDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		sum, err := fileSHA256(p)
		if err != nil {
			return err
		}
		m.bySHA[sum] = p
		return nil
	})
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hashing %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// fileOpener opens a file for tarball readers.
func fileOpener(p string) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) { return os.Open(p) }
}

// Mirrors searches several mirror folders, in order.
type Mirrors []*Mirror

// Resolve implements ImageSource.
func (ms Mirrors) Resolve(ctx context.Context, r ref.Ref) (*Image, error) {
	c := make(Chain, len(ms))
	for i, m := range ms {
		c[i] = m
	}
	return c.Resolve(ctx, r)
}

func (ms Mirrors) String() string {
	var s []string
	for _, m := range ms {
		s = append(s, m.String())
	}
	return strings.Join(s, ", ")
}

// Chart returns the first mirror's charts/<name>-<version>.tgz.
func (ms Mirrors) Chart(name, version string) (string, error) {
	return first(ms, func(m *Mirror) (string, error) { return m.Chart(name, version) },
		fmt.Errorf("chart %s %s: not in %s: %w", name, version, ms, ErrNotFound))
}

// File returns the first mirror's file with the given sha256.
func (ms Mirrors) File(sha string) (string, error) {
	return first(ms, func(m *Mirror) (string, error) { return m.File(sha) },
		fmt.Errorf("file sha256:%s: not in %s: %w", sha, ms, ErrNotFound))
}

func first(ms Mirrors, get func(*Mirror) (string, error), notFound error) (string, error) {
	for _, m := range ms {
		p, err := get(m)
		if err == nil || !errors.Is(err, ErrNotFound) {
			return p, err
		}
	}
	return "", notFound
}
