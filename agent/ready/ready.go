// Package ready is the agent's first check on a booted node: is the bundle
// that kpaas-init mounted readable, and what is it? It opens the bundle
// read-only through internal/bundle (no network code), reads the lock and
// index.json, and looks for the site's config disk.
package ready

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"kpaas.dev/appliance/internal/bundle"
)

// Report describes the node's bundle and config.
type Report struct {
	Name, Version string // from the lock
	Artifacts     int    // entries of index.json
	LockArtifacts int    // artifacts the lock lists
	// Config is the config disk's folder, or "" when the node has none.
	Config string
}

// Check opens the bundle at bundleDir and reports on it. A missing lock,
// or a lock that does not match index.json, is an error: the agent
// installs nothing from an incomplete bundle.
func Check(bundleDir, configDir string) (*Report, error) {
	s, err := bundle.Open(bundleDir)
	if err != nil {
		return nil, err
	}
	lock, err := s.ReadLock()
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", bundleDir, err)
	}
	entries, err := s.Entries()
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", bundleDir, err)
	}
	if len(entries) != len(lock.Artifacts) {
		return nil, fmt.Errorf("bundle %s: index.json has %d artifacts, the lock %d", bundleDir, len(entries), len(lock.Artifacts))
	}
	r := &Report{Name: lock.Name, Version: lock.Version, Artifacts: len(entries), LockArtifacts: len(lock.Artifacts)}
	if fi, err := os.Stat(configDir); err == nil && fi.IsDir() {
		r.Config = configDir
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("config disk: %w", err)
	}
	return r, nil
}

// ConfigFiles lists the config disk's top-level files.
func (r *Report) ConfigFiles() []string {
	if r.Config == "" {
		return nil
	}
	m, _ := filepath.Glob(filepath.Join(r.Config, "*"))
	return m
}
