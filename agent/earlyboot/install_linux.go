package earlyboot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"kpaas.dev/appliance/internal/diskplan"
	"kpaas.dev/appliance/internal/names"
)

// install writes the ISO's disk image onto the target disk (ChooseTarget),
// reads it back against the plan's digests, grows the state partition to
// the disk's end and reboots. It returns nil without writing when the
// boot is not from the ISO or the disk is installed already, so the boot
// goes on (from the installed disk: Find prefers it to the ISO).
func (m *Machine) install(ctx context.Context, devs []Device, found Found) error {
	if found.ISO == nil {
		m.logf("install: kpaas.install=%s ignored: not booted from the ISO", m.Config.Install)
		return nil
	}
	if err := os.MkdirAll(mediaDir, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(found.ISO.Path(), mediaDir, "iso9660", unix.MS_RDONLY, ""); err != nil {
		return fmt.Errorf("mounting the ISO %s: %w", found.ISO.Path(), err)
	}
	defer unix.Unmount(mediaDir, 0)

	pf, err := os.Open(filepath.Join(mediaDir, ISOPlan))
	if err != nil {
		return fmt.Errorf("this ISO has no install plan: %w", err)
	}
	plan, err := diskplan.Parse(pf)
	pf.Close()
	if err != nil {
		return fmt.Errorf("%s: %w", ISOPlan, err)
	}
	choice, err := ChooseTarget(devs, found, plan, m.Config.Install, func(d Device) DiskInfo {
		f, err := os.Open(d.Path())
		if err != nil {
			return DiskInfo{}
		}
		defer f.Close()
		return InspectDisk(f)
	})
	if err != nil {
		return err
	}
	target := choice.Disk.Path()
	if choice.Installed {
		m.logf("install: %s carries this installation already (disk %s): booting it", target, plan.DiskGUID)
		return nil
	}
	if choice.Held != "" {
		m.logf("install: overwriting %s as kpaas.install asks (it %s)", target, choice.Held)
	}
	// O_EXCL: refused while anything has the disk mounted
	f, err := os.OpenFile(target, os.O_RDWR|unix.O_EXCL|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening %s: %w", target, err)
	}
	defer f.Close()

	m.logf("install: writing %s onto %s (%s): %s", humanSize(plan.Bytes()), target, humanSize(choice.Disk.Size), plan.Summary())
	media := os.DirFS(mediaDir)
	if err := diskplan.Apply(ctx, plan, media, f, diskplan.Options{Progress: m.tenths("writing")}); err != nil {
		return fmt.Errorf("writing %s: %w", target, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", target, err)
	}
	// read back from the disk, not from the page cache
	if err := unix.IoctlSetInt(int(f.Fd()), unix.BLKFLSBUF, 0); err != nil {
		m.logf("install: warning: flushing the buffer cache of %s: %v", target, err)
	}
	if err := diskplan.Verify(ctx, plan, f, diskplan.Options{Progress: m.tenths("verifying")}); err != nil {
		return fmt.Errorf("verifying %s: %w", target, err)
	}
	size, err := unix.IoctlGetUint64(int(f.Fd()), unix.BLKGETSIZE64)
	if err != nil {
		return fmt.Errorf("size of %s: %w", target, err)
	}
	if p, grown, err := GrowGPT(f, int64(size), plan.StatePartition); err != nil {
		m.logf("install: warning: %s not grown (the first boot tries again): %v", names.PartState, err)
	} else if grown {
		m.logf("install: %s spans %s to the end of %s", names.PartState, humanSize(int64(p.LastLBA-p.FirstLBA+1)*512), target)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", target, err)
	}
	if err := unix.IoctlSetInt(int(f.Fd()), unix.BLKRRPART, 0); err != nil {
		m.debugf("re-reading the partition table of %s: %v", target, err)
	}
	f.Close()
	unix.Unmount(mediaDir, 0)
	m.logf("install: %s installed and verified (disk %s); rebooting into it", target, plan.DiskGUID)
	unix.Sync()
	err = unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	return errors.Join(errors.New("the disk is installed but the reboot failed"), err)
}

// tenths reports a long transfer on the console every 10%.
func (m *Machine) tenths(what string) func(done, total int64) {
	last := -1
	return func(done, total int64) {
		if total <= 0 {
			return
		}
		if t := int(done * 10 / total); t != last {
			last = t
			m.logf("install: %s %3d%% (%s of %s)", what, t*10, humanSize(done), humanSize(total))
		}
	}
}
