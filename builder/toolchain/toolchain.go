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

	"kpaas.dev/appliance/internal/progress"
	"kpaas.dev/appliance/internal/steps"
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
	// HarborPortal also builds Harbor's web portal from its npm sources
	// (Node.js MinNodeVersion or newer, npm, and the npm registry npm is
	// configured with, or its cache with Offline) and assembles the
	// HarborPortalImage.
	HarborPortal bool
	// Progress receives the phase lines (`phase kube (1/12): already
	// done`) and the heartbeats of compiles; Log receives command output
	// of failed steps. Both default to io.Discard.
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
// images, and, when MirrorDir is set, writes the mirror: a literal list of
// steps run by internal/steps, each component's and the images' checked
// against the cache first. Re-running it is cheap and yields identical
// bytes. A failed step's error is a *steps.StepError.
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
	if err := checkPrerequisites(h, b.goVersion, opts.HarborPortal); err != nil {
		return nil, err
	}
	comps := components(opts.HarborPortal)
	total := len(comps) + 1 // + images
	if opts.MirrorDir != "" {
		total++
	}
	res := &Result{Components: map[string]string{}}
	var imgDir string
	var list []steps.Step
	for i, c := range comps {
		label := fmt.Sprintf("phase %s (%d/%d)", c.Name, i+1, total)
		list = append(list, steps.Step{
			Name: c.Name,
			// a complete cache entry for c's recipe, versions and pins
			Check: func(context.Context) (bool, error) {
				_, _, dir, err := b.entry(c)
				if err != nil || !completeEntry(dir) {
					return false, err
				}
				res.Components[c.Name] = dir
				return true, nil
			},
			Run: func(ctx context.Context) error {
				if _, _, err := b.component(ctx, c, label); err != nil {
					return fmt.Errorf("building %s %s: %w", c.Name, c.Version, err)
				}
				return nil
			},
		})
	}
	list = append(list, steps.Step{
		Name: "images",
		// a complete images entry for these binaries
		Check: func(context.Context) (bool, error) {
			dir, err := b.imagesEntry(res.Components)
			if err != nil {
				return false, err
			}
			images, ok := cachedImages(dir)
			if ok {
				imgDir, res.Images = dir, images
			}
			return ok, nil
		},
		Run: func(ctx context.Context) error {
			if _, _, _, err := b.images(ctx, res.Components); err != nil {
				return fmt.Errorf("assembling images: %w", err)
			}
			return nil
		},
	})
	if opts.MirrorDir != "" {
		list = append(list, steps.Step{
			Name: "mirror",
			Run: func(context.Context) error {
				if err := writeMirror(opts.MirrorDir, res.Components, imgDir); err != nil {
					return fmt.Errorf("writing mirror %s: %w", opts.MirrorDir, err)
				}
				return nil
			},
		})
	}
	r := &steps.Runner{Progress: progress.New(opts.Progress, progress.Terminal(false))}
	if err := r.Run(ctx, list); err != nil {
		return nil, err
	}
	// CACHE/bin and CACHE/oci point at this build, cached or not.
	if err := b.linkBin(comps, res.Components); err != nil {
		return nil, err
	}
	if err := relink(ImagesDir(opts.CacheDir), filepath.Base(imgDir)); err != nil {
		return nil, err
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
