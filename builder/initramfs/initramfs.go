// Package initramfs builds the node's initramfs: a deterministic newc cpio
// archive holding kpaas-init as /init, the kernel modules early boot needs
// (with the dependency data kpaas-init loads them by), and /dev/console.
// Nothing else: kpaas-init is a static Go binary, and once the root is
// mounted the OS image's own tools take over.
//
// The archive is reproducible: entries are sorted, owned by root, dated 0,
// numbered in order. Building twice from the same inputs gives the same
// bytes.
package initramfs

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/u-root/u-root/pkg/cpio"

	"kpaas.dev/appliance/agent/kmod"
)

// Modules are what kpaas-init loads to find and mount the root, bundle and
// state on QEMU (virtio, q35's AHCI CD-ROM) and on common hardware (SATA,
// NVMe, USB sticks), plus the file systems it mounts. crc32c is not in
// ext4's modules.dep (ext4 asks the crypto API for it at mount time), so it
// is named here; the NLS tables are what vfat mounts with.
// Likewise crc-t10dif and crc64-rocksoft (sd_mod's checksums) look up
// their generic crypto implementations at load time.
var Modules = []string{
	"crct10dif_generic", "crc64_rocksoft_generic", "crc32c_generic",
	"virtio_pci", "virtio_blk", "virtio_scsi", "virtio_net",
	"ahci", "sd_mod", "sr_mod", "nvme",
	"xhci_pci", "ehci_pci", "usb_storage", "uas",
	"crc32c_intel", "ext4",
	"squashfs", "overlay", "isofs", "vfat", "nls_cp437", "nls_iso8859_1", "nls_utf8",
	"loop",
}

// Files beside the modules that the initramfs carries from the modules
// directory.
const (
	DepFile     = "modules.dep"
	BuiltinFile = "modules.builtin"
)

// Options says what goes into the archive.
type Options struct {
	// Init is the kpaas-init binary (static), installed as /init.
	Init string
	// ModulesDir is a kernel's modules directory (lib/modules/<release>
	// with modules.dep); KernelRelease names it inside the archive.
	ModulesDir    string
	KernelRelease string
	// Modules to carry, with everything they depend on. Default: Modules.
	Modules []string
}

// Entry is one file of the archive, for listings and tests.
type Entry struct {
	Name string
	Mode uint64
	Size int64
}

// SelectModules copies the modules names need (dependencies first) from
// the modules directory src to dst, with a modules.dep listing just them in
// load order and the kernel's modules.builtin. Names the kernel has neither
// as module nor built in are an error.
func SelectModules(src, dst string, names []string) error {
	ix, err := readIndex(src)
	if err != nil {
		return err
	}
	mods, err := ix.Order(names)
	if err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}
	var dep bytes.Buffer
	if err := kmod.FormatDep(&dep, mods, ix); err != nil {
		return err
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	for _, m := range mods {
		if err := copyFile(filepath.Join(src, m.Path), filepath.Join(dst, m.Path)); err != nil {
			return err
		}
	}
	if err := copyFile(filepath.Join(src, BuiltinFile), filepath.Join(dst, BuiltinFile)); err != nil && !os.IsNotExist(err) {
		return err
	}
	return os.WriteFile(filepath.Join(dst, DepFile), dep.Bytes(), 0o644)
}

func readIndex(dir string) (*kmod.Index, error) {
	f, err := os.Open(filepath.Join(dir, DepFile))
	if err != nil {
		return nil, fmt.Errorf("reading kernel modules: %w (run depmod)", err)
	}
	defer f.Close()
	ix, err := kmod.ParseDep(bufio.NewReader(f))
	if err != nil {
		return nil, err
	}
	if b, err := os.Open(filepath.Join(dir, BuiltinFile)); err == nil {
		defer b.Close()
		if err := ix.ParseBuiltin(b); err != nil {
			return nil, err
		}
	}
	return ix, nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copying %s: %w", src, err)
	}
	return out.Close()
}

// Write writes the archive to w and returns its entries in order. The
// modules directory is filtered through SelectModules first, so it may be
// a kernel's complete one.
func Write(w io.Writer, opts Options) ([]Entry, error) {
	if opts.KernelRelease == "" || strings.ContainsAny(opts.KernelRelease, "/ ") {
		return nil, fmt.Errorf("initramfs: invalid kernel release %q", opts.KernelRelease)
	}
	names := opts.Modules
	if names == nil {
		names = Modules
	}
	tmp, err := os.MkdirTemp("", "kpaas-initramfs-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	if err := SelectModules(opts.ModulesDir, tmp, names); err != nil {
		return nil, err
	}
	init, err := os.ReadFile(opts.Init)
	if err != nil {
		return nil, fmt.Errorf("initramfs: reading init: %w", err)
	}

	files := map[string]cpio.Record{
		"init":        cpio.StaticRecord(init, cpio.Info{Mode: cpio.S_IFREG | 0o755}),
		"dev/console": cpio.CharDev("", 0o600, 5, 1),
	}
	modRoot := path.Join("lib/modules", opts.KernelRelease)
	err = filepath.WalkDir(tmp, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(tmp, p)
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files[path.Join(modRoot, filepath.ToSlash(rel))] = cpio.StaticRecord(b, cpio.Info{Mode: cpio.S_IFREG | 0o644})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("initramfs: %w", err)
	}
	// Every parent directory, then everything sorted: a directory sorts
	// before its content.
	for name := range files {
		for d := path.Dir(name); d != "."; d = path.Dir(d) {
			if _, ok := files[d]; !ok {
				files[d] = cpio.Directory("", 0o755)
			}
		}
	}
	order := make([]string, 0, len(files))
	for name := range files {
		order = append(order, name)
	}
	sort.Strings(order)

	cw := cpio.Newc.Writer(w)
	entries := make([]Entry, 0, len(order))
	for i, name := range order {
		r := files[name]
		r.Info.Name = name
		r.Info.Ino = uint64(i + 1)
		r.Info.NLink = 1
		r = cpio.MakeReproducible(r)
		if err := cw.WriteRecord(r); err != nil {
			return nil, fmt.Errorf("initramfs: writing %s: %w", name, err)
		}
		entries = append(entries, Entry{Name: name, Mode: r.Info.Mode, Size: int64(r.Info.FileSize)})
	}
	if err := cpio.WriteTrailer(cw); err != nil {
		return nil, err
	}
	return entries, nil
}
