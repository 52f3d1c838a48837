package earlyboot

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"kpaas.dev/appliance/internal/names"
)

// Config is what the kernel command line says to kpaas-init (kpaas.*).
type Config struct {
	Root    string        // kpaas.root=: the root partition's name (default KPAAS-ROOT-A)
	Live    bool          // kpaas.live: keep the state in RAM even if KPAAS-STATE exists
	Wait    time.Duration // kpaas.wait=SECONDS: how long to wait for the devices (default 30)
	Modules []string      // kpaas.modules=a,b: more modules to load
	Debug   bool          // kpaas.debug: print every step
	Init    string        // init=: what to run after the switch (default /sbin/init)
	// Install (kpaas.install=/dev/X, or auto: the only empty disk) writes
	// the ISO's disk image onto a disk, verifies it and reboots.
	Install string
}

// ParseCmdline reads the kpaas options from a kernel command line.
func ParseCmdline(s string) (Config, error) {
	c := Config{Root: names.PartRootA, Wait: 30 * time.Second, Init: "/sbin/init"}
	for _, f := range strings.Fields(s) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "kpaas.root":
			c.Root = v
		case "kpaas.live":
			c.Live = v == "" || v == "1" || v == "yes" || v == "true"
		case "kpaas.wait":
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return c, fmt.Errorf("kpaas.wait=%q: not a number of seconds", v)
			}
			c.Wait = time.Duration(n) * time.Second
		case "kpaas.modules":
			for _, m := range strings.Split(v, ",") {
				if m != "" {
					c.Modules = append(c.Modules, m)
				}
			}
		case "kpaas.install":
			switch {
			case v == "" || v == InstallAuto:
				c.Install = InstallAuto
			case strings.HasPrefix(v, "/dev/"):
				c.Install = v
			default:
				return c, fmt.Errorf("kpaas.install=%q: want auto or a disk such as /dev/sda", v)
			}
		case "kpaas.debug":
			c.Debug = true
		case "init":
			c.Init = v
		}
	}
	return c, nil
}

// Found is the boot media as discovered.
type Found struct {
	Root   *Device // KPAAS-ROOT-A (or kpaas.root), squashfs
	Bundle *Device // KPAAS-BUNDLE
	State  *Device // KPAAS-STATE, optional
	Config *Device // KPAAS-CONFIG (partition name or file system label), optional
	ESP    *Device // the EFI partition on the root's disk, optional
	ISO    *Device // an iso9660 file system labelled KPAAS
}

// Find picks the media's devices out of a scan: partitions by GPT name,
// the ISO and the config disk by file system label. A root partition
// wins over an ISO (an installed disk boots even with the ISO still in).
func Find(devs []Device, c Config) Found {
	var f Found
	var esps []*Device
	for i := range devs {
		d := &devs[i]
		switch {
		case d.PartName == c.Root && f.Root == nil:
			f.Root = d
		case d.PartName == names.PartBundle && f.Bundle == nil:
			f.Bundle = d
		case d.PartName == names.PartState && f.State == nil:
			f.State = d
		case (d.PartName == names.PartConfig || d.FS.Label == names.PartConfig) && f.Config == nil:
			f.Config = d
		case d.FS.Type == "iso9660" && d.FS.Label == names.ISOLabel && f.ISO == nil:
			f.ISO = d
		case d.PartName == names.PartESP && d.FS.Type == "vfat":
			esps = append(esps, d)
		}
	}
	for _, d := range esps { // another disk's ESP is not the media's
		if f.Root != nil && d.Disk == f.Root.Disk && f.ESP == nil {
			f.ESP = d
		}
	}
	return f
}

// Ready tells whether what was found is enough to boot, and if not, what
// is missing.
func (f Found) Ready(c Config) error {
	if f.Root != nil {
		if f.Bundle == nil {
			return fmt.Errorf("found %s (%s) but no %s partition", c.Root, f.Root.Path(), names.PartBundle)
		}
		return nil
	}
	if f.ISO != nil {
		return nil
	}
	return fmt.Errorf("no partition named %s and no ISO labelled %s", c.Root, names.ISOLabel)
}

// Paths inside the initramfs and the new root.
const (
	NewRoot  = "/sysroot"
	roDir    = "/kpaas/ro"    // the root squashfs
	stateDir = "/kpaas/state" // the state file system (or a tmpfs)
	mediaDir = "/kpaas/media" // the ISO
	runKpaas = NewRoot + names.RunDir
	// VFATOptions are the options of every vfat mount: the kernel's default
	// iocharset (Debian: ascii) is a module the initramfs does not carry;
	// nls_utf8 it does.
	VFATOptions = "iocharset=utf8"
	// ConfigVFATPrivate closes a FAT config disk to everyone but root.
	ConfigVFATPrivate = "uid=0,gid=0,fmask=0177,dmask=0077"
	// VarMarker in the state's var/ says it was seeded from the image.
	VarMarker = ".kpaas-seeded"
)

// Op is a kind of step.
type Op string

// The steps' kinds.
const (
	OpMkdir   Op = "mkdir"   // Target
	OpMount   Op = "mount"   // Source on Target as FSType with Data, read-only if RO
	OpBind    Op = "bind"    // Source on Target
	OpMove    Op = "move"    // the mount at Source to Target
	OpLoop    Op = "loop"    // mount the image file Source on Target as FSType, via a loop device
	OpFormat  Op = "format"  // mkfs.ext4 -L Data on Source, run from the image at Target
	OpGrow    Op = "grow"    // extend partition number Data on disk Source (partition Target) to fill the disk
	OpSeedVar Op = "seedvar" // copy Source (the image's /var) to Target unless Target/VarMarker exists
)

// Step is one action of the mount plan.
type Step struct {
	Op             Op
	Source, Target string
	FSType, Data   string
	RO             bool
	// IfExists skips a bind or loop step whose Source does not exist.
	IfExists bool
}

func (s Step) String() string {
	var b strings.Builder
	b.WriteString(string(s.Op))
	for _, f := range []string{s.Source, s.Target, s.FSType, s.Data} {
		if f != "" {
			b.WriteString(" " + f)
		}
	}
	if s.RO {
		b.WriteString(" ro")
	}
	if s.IfExists {
		b.WriteString(" if-exists")
	}
	return b.String()
}

// Plan lists the steps that build the new root at NewRoot from what was
// found. Disk: root squashfs read-only at /kpaas/ro; the state partition
// (formatted first when blank) carries the overlay's upper layer and, bound
// on /var, the node's data; without a state partition both live in RAM.
// ISO: the same with the root squashfs and the bundle read from the ISO.
// The bundle ends up read-only at /run/kpaas/bundle, the ESP (the ISO's EFI
// image) read-only at /run/kpaas/esp, the config disk at /run/kpaas/config
// (without one, the ESP's kpaas/cluster.yaml is bound there when present),
// and the lower mounts under /run/kpaas, visible to the booted system.
func Plan(f Found, c Config) ([]Step, error) {
	if err := f.Ready(c); err != nil {
		return nil, err
	}
	var s []Step
	add := func(st ...Step) { s = append(s, st...) }
	mkdir := func(dirs ...string) {
		for _, d := range dirs {
			add(Step{Op: OpMkdir, Target: d})
		}
	}
	mkdir(roDir, stateDir, NewRoot)

	iso := f.Root == nil
	if iso {
		mkdir(mediaDir)
		add(Step{Op: OpMount, Source: f.ISO.Path(), Target: mediaDir, FSType: "iso9660", RO: true},
			Step{Op: OpLoop, Source: mediaDir + "/" + names.ISORoot, Target: roDir, FSType: "squashfs", RO: true})
	} else {
		add(Step{Op: OpMount, Source: f.Root.Path(), Target: roDir, FSType: "squashfs", RO: true})
	}

	persistent := f.State != nil && !c.Live && !iso
	if persistent {
		if f.State.FS.Type == "" {
			// First boot: the image was written to (or resized to) a
			// bigger disk; grow the state to fill it before formatting.
			if f.State.Disk != "" && f.State.PartN > 0 {
				add(Step{Op: OpGrow, Source: "/dev/" + f.State.Disk, Target: f.State.Path(), Data: strconv.Itoa(f.State.PartN)})
			}
			add(Step{Op: OpFormat, Source: f.State.Path(), Target: roDir, Data: names.PartState})
		} else if f.State.FS.Type != "ext4" {
			return nil, fmt.Errorf("%s (%s) holds %s, not ext4: refusing to touch it", names.PartState, f.State.Path(), f.State.FS.Type)
		}
		add(Step{Op: OpMount, Source: f.State.Path(), Target: stateDir, FSType: "ext4"})
	} else {
		add(Step{Op: OpMount, Source: "tmpfs", Target: stateDir, FSType: "tmpfs", Data: "mode=0755,size=50%"})
	}
	mkdir(stateDir+"/root/upper", stateDir+"/root/work")
	add(Step{Op: OpMount, Source: "overlay", Target: NewRoot, FSType: "overlay",
		Data: "lowerdir=" + roDir + ",upperdir=" + stateDir + "/root/upper,workdir=" + stateDir + "/root/work"})
	if persistent {
		add(Step{Op: OpSeedVar, Source: roDir + "/var", Target: stateDir + "/var"},
			Step{Op: OpBind, Source: stateDir + "/var", Target: NewRoot + "/var"})
	}

	add(Step{Op: OpMount, Source: "tmpfs", Target: NewRoot + "/run", FSType: "tmpfs", Data: "mode=0755,nosuid,nodev"})
	mkdir(runKpaas+"/bundle", runKpaas+"/ro", runKpaas+"/state")
	if iso {
		add(Step{Op: OpLoop, Source: mediaDir + "/" + names.ISOBundle, Target: NewRoot + names.BundleDir, FSType: "squashfs", RO: true})
	} else {
		if f.Bundle.FS.Type == "" {
			return nil, fmt.Errorf("%s (%s) holds no file system kpaas-init recognises", names.PartBundle, f.Bundle.Path())
		}
		add(Step{Op: OpMount, Source: f.Bundle.Path(), Target: NewRoot + names.BundleDir, FSType: f.Bundle.FS.Type, RO: true})
	}
	// The ESP: `kpaas image build --config` puts the cluster configuration
	// there; it is the config unless a config disk is attached.
	esp := false
	if iso {
		mkdir(NewRoot + names.ESPDir)
		add(Step{Op: OpLoop, Source: mediaDir + "/" + names.ISOESP, Target: NewRoot + names.ESPDir, FSType: "vfat", Data: VFATOptions, RO: true, IfExists: true})
		esp = true
	} else if f.ESP != nil {
		mkdir(NewRoot + names.ESPDir)
		add(Step{Op: OpMount, Source: f.ESP.Path(), Target: NewRoot + names.ESPDir, FSType: "vfat", Data: VFATOptions, RO: true})
		esp = true
	}
	if f.Config != nil {
		mkdir(NewRoot + names.ConfigDir)
		var data string
		if f.Config.FS.Type == "vfat" {
			// FAT has no owners or modes: the config disk carries the
			// cluster's secrets, so only root may read them.
			data = VFATOptions + "," + ConfigVFATPrivate
		}
		add(Step{Op: OpMount, Source: f.Config.Path(), Target: NewRoot + names.ConfigDir, FSType: f.Config.FS.Type, Data: data, RO: true})
	} else if esp {
		add(Step{Op: OpBind, Source: NewRoot + names.ESPDir + "/" + names.ESPConfig, Target: NewRoot + names.ConfigDir + "/" + filepath.Base(names.ESPConfig), IfExists: true})
	}
	add(Step{Op: OpMove, Source: roDir, Target: runKpaas + "/ro"},
		Step{Op: OpMove, Source: stateDir, Target: runKpaas + "/state"})
	if iso {
		mkdir(runKpaas + "/media")
		add(Step{Op: OpMove, Source: mediaDir, Target: runKpaas + "/media"})
	}
	return s, nil
}
