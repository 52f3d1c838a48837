// Package toolchain builds the K-PaaS node toolchain from Go module sources:
// the Kubernetes binaries, etcd, containerd, runc, the CNI plugins, crictl,
// CoreDNS, kube-router and pause; it assembles OCI images for everything
// kubeadm runs as a container and lays both out as a mirror folder that
// `kpaas bake --mirror` consumes.
//
// Every Go-built component has a scratch module under toolchain/<name>/ in the
// repository whose go.mod and go.sum pin its sources and dependencies (for
// Kubernetes the module also replaces the staging modules with their
// published versions). Build runs the component's recipe with the go command
// on PATH, in that module, so the module proxy (or GOPROXY=off with a filled
// module cache) is the only input.
//
// Outputs are cached per component under Options.CacheDir in a folder named
// <component>-<version>-<go version>-<hash of go.mod, go.sum and recipe>, made
// visible by an atomic rename after the build succeeded, so a run that is
// interrupted leaves no half entry and a second run takes seconds.
//
// Mirror layout written by Build:
//
//	MIRROR/files/<name>      plain binaries and the CNI plugins tarball
//	MIRROR/files/SHA256SUMS  sha256sum(1) format, sorted by name
//	MIRROR/oci/              one OCI image layout; each manifest in index.json
//	                         carries org.opencontainers.image.ref.name = full reference
package toolchain

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// Options configure Build. The zero value, after Default, builds into the
// user cache and writes ./out/mirror.
type Options struct {
	// SourceDir holds the scratch modules (toolchain/ in the repository).
	// Default: the nearest toolchain/ folder with a kube/go.mod found walking
	// up from the working directory.
	SourceDir string
	// CacheDir holds one folder per built component.
	// Default: $KPAAS_CACHE/toolchain, else os.UserCacheDir()/kpaas/toolchain.
	CacheDir string
	// MirrorDir receives files/ and oci/. Empty: only fill the cache.
	MirrorDir string
	// Go is the go command. Default "go" from PATH.
	Go string
	// SourceDateEpoch is the timestamp of every image file and config.
	// Zero (the default): the Unix epoch. `kpaas toolchain build` sets it
	// from SOURCE_DATE_EPOCH; the library does not read the environment.
	SourceDateEpoch time.Time
	// Offline sets GOPROXY=off for the builds: every module must already be
	// in the module cache.
	Offline bool
	// Progress receives one line per step; Log receives command output of
	// failed steps. Both default to io.Discard.
	Progress io.Writer
	Log      io.Writer
	// Heartbeat is how often a component that is being compiled reports
	// that it still is, with the time elapsed (default one minute;
	// negative: never).
	Heartbeat time.Duration
}

// Default fills unset options (the cache folder from KPAAS_CACHE, the
// source folder from the working directory).
func (o *Options) Default() error {
	if o.Go == "" {
		o.Go = "go"
	}
	if o.CacheDir == "" {
		dir, err := DefaultCacheDir()
		if err != nil {
			return err
		}
		o.CacheDir = dir
	}
	if o.SourceDir == "" {
		dir, err := findSourceDir()
		if err != nil {
			return err
		}
		o.SourceDir = dir
	}
	if o.SourceDateEpoch.IsZero() {
		o.SourceDateEpoch = time.Unix(0, 0).UTC()
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.Heartbeat == 0 {
		o.Heartbeat = time.Minute
	}
	return nil
}

// DefaultCacheDir is $KPAAS_CACHE/toolchain, else
// os.UserCacheDir()/kpaas/toolchain.
func DefaultCacheDir() (string, error) {
	if d := os.Getenv("KPAAS_CACHE"); d != "" {
		return filepath.Join(d, "toolchain"), nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("finding the cache folder (set KPAAS_CACHE): %w", err)
	}
	return filepath.Join(d, "kpaas", "toolchain"), nil
}

// BinDir is the folder of the cache where Build links every built binary
// under its plain name (kube-apiserver, etcd, kubectl, …).
func BinDir(cacheDir string) string { return filepath.Join(cacheDir, "bin") }

// ImagesDir is the OCI image layout of the cache holding the images of the
// last Build (a symlink to its cache entry).
func ImagesDir(cacheDir string) string { return filepath.Join(cacheDir, "oci") }

func findSourceDir() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		cand := filepath.Join(dir, "toolchain")
		if _, err := os.Stat(filepath.Join(cand, "kube", "go.mod")); err == nil {
			return cand, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no toolchain/kube/go.mod above the working directory (run from the repository or pass the source folder)")
		}
		dir = parent
	}
}

// Result describes what Build produced.
type Result struct {
	// Components maps a component name to its cache folder.
	Components map[string]string
	// Images lists the assembled images with their digests.
	Images []ImageResult
}

// Build builds every component (or takes it from the cache), assembles the
// images, and, when MirrorDir is set, writes the mirror. Re-running it is
// cheap and yields identical bytes.
//
// Before anything else it checks the build host (C compiler, static
// libraries, apt lists, the go command's version) and returns a
// *PrerequisiteError naming every missing piece and its Debian package. A
// component that is compiled announces itself with its expected cold time
// and reports every Options.Heartbeat that it still is.
func Build(ctx context.Context, opts Options) (*Result, error) {
	return build(ctx, opts, realHost())
}

// build is Build on a given host (tests give one that lacks things).
func build(ctx context.Context, opts Options, h host) (*Result, error) {
	if err := opts.Default(); err != nil {
		return nil, err
	}
	b, err := newBuilder(ctx, &opts)
	if err != nil {
		return nil, err
	}
	if err := checkPrerequisites(h, b.goVersion); err != nil {
		return nil, err
	}
	comps := components()
	total := len(comps) + 1 // + images
	if opts.MirrorDir != "" {
		total++
	}
	res := &Result{Components: map[string]string{}}
	step := 0
	label := func(name string) string { return fmt.Sprintf("toolchain %s (%d/%d)", name, step+1, total) }
	report := func(name string, start time.Time, cached bool, err error) {
		switch {
		case err != nil:
			fmt.Fprintf(opts.Progress, "%s: failed: %v\n", label(name), err)
		case cached:
			fmt.Fprintf(opts.Progress, "%s: cached\n", label(name))
		default:
			fmt.Fprintf(opts.Progress, "%s: done in %s\n", label(name), roundDuration(time.Since(start)))
		}
		step++
	}

	for _, c := range comps {
		start := time.Now()
		dir, cached, err := b.component(ctx, c, label(c.Name))
		report(c.Name, start, cached, err)
		if err != nil {
			return nil, fmt.Errorf("building %s %s: %w", c.Name, c.Version, err)
		}
		res.Components[c.Name] = dir
	}
	if err := b.linkBin(comps, res.Components); err != nil {
		return nil, err
	}

	start := time.Now()
	imgDir, images, cached, err := b.images(ctx, res.Components)
	report("images", start, cached, err)
	if err != nil {
		return nil, fmt.Errorf("assembling images: %w", err)
	}
	res.Images = images
	if err := relink(ImagesDir(opts.CacheDir), filepath.Base(imgDir)); err != nil {
		return nil, err
	}

	if opts.MirrorDir != "" {
		start := time.Now()
		err := writeMirror(opts.MirrorDir, res.Components, imgDir)
		report("mirror", start, false, err)
		if err != nil {
			return nil, fmt.Errorf("writing mirror %s: %w", opts.MirrorDir, err)
		}
	}
	return res, nil
}

func roundDuration(d time.Duration) time.Duration {
	switch {
	case d > time.Minute:
		return d.Round(time.Second)
	case d > time.Second:
		return d.Round(100 * time.Millisecond)
	default:
		return d.Round(time.Millisecond)
	}
}
