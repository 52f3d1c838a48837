package earlyboot

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"github.com/u-root/u-root/pkg/kmodule"
	"github.com/u-root/u-root/pkg/mount"
	"github.com/u-root/u-root/pkg/mount/loop"
	"golang.org/x/sys/unix"

	"kpaas.dev/appliance/agent/kmod"
	"kpaas.dev/appliance/internal/names"
	"kpaas.dev/appliance/internal/progress"
	"kpaas.dev/appliance/internal/steps"
)

// Machine performs a boot on the running system. Console receives the
// progress lines.
type Machine struct {
	Console io.Writer
	Config  Config
}

func (m *Machine) logf(format string, args ...any) {
	fmt.Fprintf(m.Console, "kpaas-init: "+format+"\n", args...)
}

func (m *Machine) debugf(format string, args ...any) {
	if m.Config.Debug {
		m.logf(format, args...)
	}
}

// MountKernelFS mounts /proc, /sys and /dev (devtmpfs: the kernel does not
// mount it by itself here) unless they are mounted.
func MountKernelFS() error {
	for _, k := range []struct{ fstype, dir string }{{"proc", "/proc"}, {"sysfs", "/sys"}, {"devtmpfs", "/dev"}} {
		if err := os.MkdirAll(k.dir, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(k.fstype, k.dir, k.fstype, unix.MS_NOSUID|unix.MS_NOEXEC*boolFlag(k.fstype != "devtmpfs"), ""); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mounting %s: %w", k.dir, err)
		}
	}
	return nil
}

func boolFlag(b bool) uintptr {
	if b {
		return 1
	}
	return 0
}

// Boot runs the phases up to the switch of root; it returns only on
// failure (after the switch, the process is the OS's init).
func (m *Machine) Boot(ctx context.Context) error {
	var found Found
	var devs []Device
	var plan []Step
	phases := []steps.Step{
		{Name: "modules", Run: func(context.Context) error { return m.loadModules() }},
		{Name: "devices", Run: func(ctx context.Context) (err error) { found, devs, err = m.waitDevices(ctx); return err }},
	}
	if m.Config.Install != "" {
		// writes the disk and reboots; returns only when the disk is
		// installed already (or this is not the ISO): the boot goes on
		phases = append(phases, steps.Step{Name: "install", Run: func(ctx context.Context) error { return m.install(ctx, devs, found) }})
	}
	phases = append(phases,
		steps.Step{Name: "plan", Run: func(context.Context) (err error) { plan, err = Plan(found, m.Config); return err }},
		steps.Step{Name: "mounts", Run: func(context.Context) error { return m.perform(plan) }},
	)
	r := &steps.Runner{Progress: progress.New(m.Console, progress.Terminal(false), progress.Prefix("kpaas-init: "))}
	if err := r.Run(ctx, phases); err != nil {
		return err // a *steps.StepError: "PHASE: cause"
	}
	// Lstat: /sbin/init is an absolute symlink, valid only after the switch.
	if _, err := os.Lstat(NewRoot + m.Config.Init); err != nil {
		return fmt.Errorf("the new root has no %s: %w", m.Config.Init, err)
	}
	m.logf("switching root to %s (%s)", NewRoot, m.Config.Init)
	return mount.SwitchRoot(NewRoot, m.Config.Init)
}

// loadModules loads every module the initramfs carries, in the order of
// its modules.dep (dependencies first), then kpaas.modules. A module that
// fails to load is reported but not fatal: it may be for hardware this
// machine lacks (crc32c_intel without SSE4.2); a missing driver shows up
// as a missing device.
func (m *Machine) loadModules() error {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return err
	}
	rel := unix.ByteSliceToString(u.Release[:])
	dir := filepath.Join("/lib/modules", rel)
	f, err := os.Open(filepath.Join(dir, "modules.dep"))
	if err != nil {
		have, _ := filepath.Glob("/lib/modules/*")
		return fmt.Errorf("no modules for kernel %s in the initramfs (it has %v): was it built for another kernel?", rel, have)
	}
	ix, err := kmod.ParseDep(bufio.NewReader(f))
	f.Close()
	if err != nil {
		return err
	}
	if b, err := os.Open(filepath.Join(dir, "modules.builtin")); err == nil {
		ix.ParseBuiltin(b)
		b.Close()
	}
	names := depOrder(filepath.Join(dir, "modules.dep"))
	names = append(names, m.Config.Modules...)
	mods, err := ix.Order(names)
	if err != nil {
		m.logf("warning: %v", err)
	}
	loaded := 0
	for _, mod := range mods {
		if err := loadModule(filepath.Join(dir, mod.Path)); err != nil {
			m.debugf("module %s: %v", mod.Name, err)
			continue
		}
		loaded++
	}
	m.debugf("%d of %d modules loaded", loaded, len(mods))
	return nil
}

// depOrder returns the module names of a modules.dep in file order.
func depOrder(path string) []string {
	b, _ := os.ReadFile(path)
	var names []string
	for _, l := range strings.Split(string(b), "\n") {
		if p, _, ok := strings.Cut(l, ":"); ok {
			names = append(names, kmod.Name(p))
		}
	}
	return names
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := kmodule.FileInit(f, "", 0); err != nil && !errors.Is(err, unix.EEXIST) {
		return err
	}
	return nil
}

// waitDevices scans the block devices until the media are complete or the
// wait is over; devices appear while their drivers probe.
func (m *Machine) waitDevices(ctx context.Context) (Found, []Device, error) {
	deadline := time.Now().Add(m.Config.Wait)
	for {
		devs, err := Scan("/sys")
		if err != nil {
			return Found{}, nil, err
		}
		FillPartNames(devs, func(disk string) (io.ReaderAt, func(), error) {
			f, err := os.Open("/dev/" + disk)
			if err != nil {
				return nil, nil, err
			}
			return f, func() { f.Close() }, nil
		})
		for i := range devs {
			if f, err := os.Open(devs[i].Path()); err == nil {
				devs[i].FS = Probe(f)
				f.Close()
			}
		}
		found := Find(devs, m.Config)
		err = found.Ready(m.Config)
		// With the root found, give the state partition's disk a moment too:
		// partitions of one disk appear together, so nothing to wait for.
		if err == nil {
			for _, d := range devs {
				m.debugf("device %s disk=%s part=%d name=%q fs=%s label=%q", d.Name, d.Disk, d.PartN, d.PartName, d.FS.Type, d.FS.Label)
			}
			return found, devs, nil
		}
		if time.Now().After(deadline) {
			return Found{}, nil, fmt.Errorf("%w (after %s; devices: %s)", err, m.Config.Wait, describe(devs))
		}
		select {
		case <-ctx.Done():
			return Found{}, nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func describe(devs []Device) string {
	if len(devs) == 0 {
		return "none"
	}
	var s []string
	for _, d := range devs {
		x := d.Name
		if d.PartName != "" {
			x += " " + d.PartName
		}
		if d.FS.Type != "" {
			x += " " + d.FS.Type
			if d.FS.Label != "" {
				x += ":" + d.FS.Label
			}
		}
		s = append(s, x)
	}
	return strings.Join(s, ", ")
}

// perform carries out the plan's steps in order.
func (m *Machine) perform(plan []Step) error {
	for _, s := range plan {
		m.debugf("%s", s)
		if err := m.do(s); err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	return nil
}

func (m *Machine) do(s Step) error {
	if s.IfExists {
		if _, err := os.Stat(s.Source); errors.Is(err, fs.ErrNotExist) {
			m.debugf("skipped, no %s", s.Source)
			return nil
		}
	}
	switch s.Op {
	case OpMkdir:
		return os.MkdirAll(s.Target, 0o755)
	case OpMount:
		flags, data := mountFlags(s.Data)
		if s.RO {
			flags |= unix.MS_RDONLY
		}
		return unix.Mount(s.Source, s.Target, s.FSType, flags, data)
	case OpBind:
		if err := bindTarget(s.Source, s.Target); err != nil {
			return err
		}
		return unix.Mount(s.Source, s.Target, "", unix.MS_BIND, "")
	case OpMove:
		return unix.Mount(s.Source, s.Target, "", unix.MS_MOVE, "")
	case OpLoop:
		dev, err := loop.FindDevice()
		if err != nil {
			return fmt.Errorf("finding a loop device: %w", err)
		}
		if err := loop.SetFile(dev, s.Source); err != nil {
			return err
		}
		flags, data := mountFlags(s.Data)
		if s.RO {
			flags |= unix.MS_RDONLY
		}
		return unix.Mount(dev, s.Target, s.FSType, flags, data)
	case OpGrow:
		// Not fatal: a state that could not grow still boots, only small.
		if err := m.grow(s.Source, s.Target, s.Data); err != nil {
			m.logf("warning: not growing %s: %v", s.Target, err)
		}
		return nil
	case OpFormat:
		m.logf("formatting %s as ext4 (%s): first boot", s.Source, s.Data)
		return format(s.Target, s.Source, s.Data)
	case OpSeedVar:
		if _, err := os.Stat(filepath.Join(s.Target, VarMarker)); err == nil {
			return nil
		}
		m.logf("seeding %s from the image's /var", s.Target)
		if err := CopyTree(s.Source, s.Target); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(s.Target, VarMarker), []byte("seeded by kpaas-init\n"), 0o644)
	}
	return fmt.Errorf("unknown step %q", s.Op)
}

// grow extends partition number n (the blank state partition) of disk to
// fill the disk (GrowGPT), then tells the kernel its new size with
// BLKPG_RESIZE_PARTITION: the disk's root partition is mounted, so the
// whole table cannot be re-read (BLKRRPART would fail with EBUSY).
func (m *Machine) grow(disk, part, n string) error {
	partN, err := strconv.Atoi(n)
	if err != nil {
		return fmt.Errorf("partition number %q: %w", n, err)
	}
	f, err := os.OpenFile(disk, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	size, err := unix.IoctlGetUint64(int(f.Fd()), unix.BLKGETSIZE64)
	if err != nil {
		return fmt.Errorf("size of %s: %w", disk, err)
	}
	p, grown, err := GrowGPT(f, int64(size), partN)
	if err != nil {
		return err
	}
	if !grown {
		m.debugf("%s already fills %s", part, disk)
		return nil
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", disk, err)
	}
	bp := unix.BlkpgPartition{Start: int64(p.FirstLBA) * 512, Length: int64(p.LastLBA-p.FirstLBA+1) * 512, Pno: int32(partN)}
	arg := unix.BlkpgIoctlArg{Op: unix.BLKPG_RESIZE_PARTITION, Datalen: int32(unsafe.Sizeof(bp)), Data: (*byte)(unsafe.Pointer(&bp))}
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.BLKPG, uintptr(unsafe.Pointer(&arg))); errno != 0 {
		return fmt.Errorf("the GPT of %s is grown but the kernel was not told (BLKPG_RESIZE_PARTITION): %w", disk, errno)
	}
	m.logf("grew %s (%s) to %s", names.PartState, part, humanSize(bp.Length))
	return nil
}

func humanSize(n int64) string {
	if n < 1<<30 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
}

// bindTarget makes the mount point of a bind: a folder for a folder, an
// empty file (and its parents) for a file.
func bindTarget(source, target string) error {
	fi, err := os.Stat(source)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return os.MkdirAll(target, 0o755)
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(target, os.O_CREATE|os.O_RDONLY, 0o644)
	if err != nil {
		return err
	}
	return f.Close()
}

// mountFlags splits the generic options (nosuid, nodev, noexec) out of a
// step's data, which the file system itself would reject.
func mountFlags(data string) (uintptr, string) {
	var flags uintptr
	var rest []string
	for _, o := range strings.Split(data, ",") {
		switch o {
		case "nosuid":
			flags |= unix.MS_NOSUID
		case "nodev":
			flags |= unix.MS_NODEV
		case "noexec":
			flags |= unix.MS_NOEXEC
		case "":
		default:
			rest = append(rest, o)
		}
	}
	return flags, strings.Join(rest, ",")
}

// format runs the image's own mkfs.ext4 in a chroot of the read-only root,
// with /dev and /proc bound in, on device.
func format(root, device, label string) error {
	var undo []string
	defer func() {
		for i := len(undo) - 1; i >= 0; i-- {
			unix.Unmount(undo[i], unix.MNT_DETACH)
		}
	}()
	for _, d := range []string{"/dev", "/proc", "/sys"} {
		if err := unix.Mount(d, root+d, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("binding %s into the image: %w", d, err)
		}
		undo = append(undo, root+d)
	}
	cmd := exec.Command("/sbin/mkfs.ext4", "-q", "-F", "-L", label, device)
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root}
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("mkfs.ext4 %s: %w: %s", device, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// CopyTree copies the tree at src into dst (created), keeping modes,
// owners, times and symlinks. Special files are recreated.
func CopyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st, _ := fi.Sys().(*syscall.Stat_t)
		switch {
		case fi.IsDir():
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
		case fi.Mode()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if err := os.Symlink(link, target); err != nil && !errors.Is(err, fs.ErrExist) {
				return err
			}
		case fi.Mode().IsRegular():
			if err := copyFile(p, target); err != nil {
				return err
			}
		default:
			if st != nil {
				if err := unix.Mknod(target, st.Mode, int(st.Rdev)); err != nil && !errors.Is(err, fs.ErrExist) {
					return err
				}
			}
		}
		if st != nil {
			if err := os.Lchown(target, int(st.Uid), int(st.Gid)); err != nil {
				return err
			}
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			if err := os.Chmod(target, fi.Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
				return err
			}
		}
		return nil
	})
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
