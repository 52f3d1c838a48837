package osimage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"kpaas.dev/appliance/api/osimage/v1alpha1"
	"kpaas.dev/appliance/builder/initramfs"
	"kpaas.dev/appliance/internal/atomicfile"
)

// recipeVersion changes whenever the base recipe below changes what it
// produces, so cached bases built by an older recipe are not reused.
const recipeVersion = "2"

// Base is the cached result of building a definition's root filesystem:
// the base layer and what was taken out of the root for booting.
type Base struct {
	Dir string `json:"-"` // the cache entry
	Key string `json:"key"`

	Layer Layer `json:"layer"` // Dir/base.tar.gz

	KernelRelease string `json:"kernelRelease"`
	// Kernel is the kernel's path inside the root (boot/vmlinuz-<release>).
	Kernel string `json:"kernel"`
	// PVH tells whether Dir/boot/vmlinux can be booted directly by QEMU.
	PVH bool `json:"pvh"`
	// Packages are the installed packages as "name=version", sorted.
	Packages []string `json:"packages"`
	// Epoch is the time the layer's times are set to (Options.Epoch).
	Epoch int64 `json:"epoch"`
	// Seconds is how long the build took.
	Seconds float64 `json:"seconds"`
}

// Layer is one gzip-compressed layer file with its digests.
type Layer struct {
	File   string `json:"file"` // relative to the cache entry
	Digest string `json:"digest"`
	DiffID string `json:"diffID"`
	Size   int64  `json:"size"`
}

// Files of a cache entry.
const (
	baseMeta   = "base.json"
	baseLayer  = "base.tar.gz"
	bootDir    = "boot"
	modulesDir = "modules" // modules/<release>: the initramfs's modules
)

// VmlinuzPath, VmlinuxPath and ModulesPath locate the extracted kernel
// files in a cache entry.
func (b *Base) VmlinuzPath() string { return filepath.Join(b.Dir, bootDir, "vmlinuz") }
func (b *Base) VmlinuxPath() string { return filepath.Join(b.Dir, bootDir, "vmlinux") }
func (b *Base) ModulesPath() string { return filepath.Join(b.Dir, modulesDir, b.KernelRelease) }

// cacheKey hashes everything the base depends on: the definition, the
// recipe and the epoch.
func cacheKey(def *v1alpha1.OSImage, epoch int64) string {
	j, _ := json.Marshal(def)
	h := sha256.New()
	fmt.Fprintf(h, "recipe %s\nepoch %d\nmodules %s\n", recipeVersion, epoch, strings.Join(initramfs.Modules, ","))
	h.Write(j)
	return hex.EncodeToString(h.Sum(nil))[:32]
}

// loadBase returns the cached base in dir, or nil.
func loadBase(dir string) *Base {
	b, err := os.ReadFile(filepath.Join(dir, baseMeta))
	if err != nil {
		return nil
	}
	var base Base
	if json.Unmarshal(b, &base) != nil {
		return nil
	}
	base.Dir = dir
	if fi, err := os.Stat(filepath.Join(dir, base.Layer.File)); err != nil || fi.Size() != base.Layer.Size {
		return nil
	}
	return &base
}

// BuildBase returns the definition's base from the cache, building it with
// mmdebstrap first when it is not there. Building needs root.
func BuildBase(ctx context.Context, def *v1alpha1.OSImage, opts Options) (*Base, error) {
	opts.defaults()
	key := cacheKey(def, opts.Epoch)
	dir := filepath.Join(opts.CacheDir, def.Metadata.Name+"-"+key)
	if b := loadBase(dir); b != nil {
		opts.logf("os: base %s cached (%s)", def.Metadata.Name, dir)
		return b, nil
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("building an OS image runs mmdebstrap as root: run as root (sudo), or use a cached or prebuilt image")
	}
	if _, err := exec.LookPath("mmdebstrap"); err != nil {
		return nil, errors.New("mmdebstrap not found: apt-get install mmdebstrap")
	}
	start := time.Now()
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	rootfs := filepath.Join(dir, "rootfs")
	defer os.RemoveAll(rootfs) // the layer is what is kept

	opts.logf("os: mmdebstrap %s (%s) into %s", def.Suite, def.Mirror, rootfs)
	if err := opts.run(ctx, "mmdebstrap", mmdebstrapArgs(def, rootfs)...); err != nil {
		return nil, err
	}
	base := &Base{Dir: dir, Key: key, Epoch: opts.Epoch}
	var err error
	if base.Packages, err = packages(ctx, rootfs); err != nil {
		return nil, err
	}
	if err := extractBoot(rootfs, base); err != nil {
		return nil, err
	}
	ensureVmlinux(base, opts.logf)
	opts.logf("os: kernel %s (direct boot vmlinux: %v)", base.KernelRelease, base.PVH)
	if err := initramfs.SelectModules(filepath.Join(rootfs, "lib/modules", base.KernelRelease), base.ModulesPath(), initramfs.Modules); err != nil {
		return nil, err
	}
	opts.logf("os: writing the base layer")
	if base.Layer, err = writeLayer(filepath.Join(dir, baseLayer), func(tw *tarWriter) error {
		return tw.addTree(rootfs)
	}, opts.Epoch); err != nil {
		return nil, fmt.Errorf("writing base layer: %w", err)
	}
	base.Layer.File = baseLayer
	base.Seconds = time.Since(start).Seconds()
	meta, _ := json.MarshalIndent(base, "", "  ")
	if err := atomicfile.WriteFile(filepath.Join(dir, baseMeta), append(meta, '\n'), 0o644); err != nil {
		return nil, err
	}
	opts.logf("os: base %s built in %.0fs: layer %d MB", def.Metadata.Name, base.Seconds, base.Layer.Size>>20)
	return base, nil
}

// mmdebstrapArgs is the recipe: a minbase root with the kernel and the
// definition's packages; no documentation, man pages or translations; no
// initrd (update-initramfs is diverted while packages install: the node
// boots with kpaas's own initramfs).
func mmdebstrapArgs(def *v1alpha1.OSImage, target string) []string {
	args := []string{
		"--mode=root", "--variant=minbase", "--format=directory",
		"--arch=" + def.Architecture,
		"--components=" + strings.Join(def.Components, ","),
		"--include=" + strings.Join(append([]string{def.Kernel}, def.Packages...), ","),
		`--aptopt=Acquire::Retries "3"`,
		"--dpkgopt=path-exclude=/usr/share/man/*",
		"--dpkgopt=path-exclude=/usr/share/info/*",
		"--dpkgopt=path-exclude=/usr/share/doc/*",
		"--dpkgopt=path-include=/usr/share/doc/*/copyright",
		"--dpkgopt=path-exclude=/usr/share/locale/*",
		"--dpkgopt=path-include=/usr/share/locale/locale.alias",
		`--essential-hook=chroot "$1" dpkg-divert --quiet --local --rename --add /usr/sbin/update-initramfs && printf '#!/bin/sh\nexit 0\n' > "$1/usr/sbin/update-initramfs" && chmod 755 "$1/usr/sbin/update-initramfs"`,
		`--customize-hook=rm -f "$1/usr/sbin/update-initramfs" && chroot "$1" dpkg-divert --quiet --local --rename --remove /usr/sbin/update-initramfs`,
		`--customize-hook=rm -f "$1"/boot/initrd.img* "$1"/initrd.img* "$1"/initrd.img.old; echo kpaas-node > "$1/etc/hostname"; echo uninitialized > "$1/etc/machine-id"; printf '# kpaas-init mounts the root, /var and the bundle\n' > "$1/etc/fstab"`,
		def.Suite, target, def.Mirror,
	}
	return append(args, def.Sources...)
}

// packages lists the root's installed packages.
func packages(ctx context.Context, rootfs string) ([]string, error) {
	out, err := exec.CommandContext(ctx, "dpkg-query", "--admindir="+filepath.Join(rootfs, "var/lib/dpkg"),
		"-W", "-f", "${Package}=${Version}\n").Output()
	if err != nil {
		return nil, fmt.Errorf("listing packages: %w", err)
	}
	return strings.Fields(string(out)), nil
}

// extractBoot copies the kernel out of the root (boot/vmlinuz) and
// unpacks its ELF image (boot/vmlinux) for QEMU's direct boot.
func extractBoot(rootfs string, base *Base) error {
	matches, _ := filepath.Glob(filepath.Join(rootfs, "boot", "vmlinuz-*"))
	if len(matches) != 1 {
		return fmt.Errorf("expected one kernel in /boot, found %d", len(matches))
	}
	base.Kernel = "boot/" + filepath.Base(matches[0])
	base.KernelRelease = strings.TrimPrefix(filepath.Base(matches[0]), "vmlinuz-")
	if _, err := os.Stat(filepath.Join(rootfs, "lib/modules", base.KernelRelease, "modules.dep")); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("kernel %s has no modules.dep", base.KernelRelease)
	}
	dst := filepath.Join(base.Dir, bootDir)
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	vmlinuz, err := os.ReadFile(matches[0])
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dst, "vmlinuz"), vmlinuz, 0o644); err != nil {
		return err
	}
	if cfg, err := os.ReadFile(filepath.Join(rootfs, "boot", "config-"+base.KernelRelease)); err == nil {
		if err := os.WriteFile(filepath.Join(dst, "config"), cfg, 0o644); err != nil {
			return err
		}
	}
	return nil
}
