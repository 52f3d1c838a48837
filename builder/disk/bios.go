package disk

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"maps"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"

	"kpaas.dev/appliance/builder/disk/internal/biosboot"
	"kpaas.dev/appliance/builder/disk/internal/fatfix"
)

// Firmware is a kind of firmware an output boots under.
type Firmware string

const (
	BIOS Firmware = "bios" // legacy BIOS (SeaBIOS, CSM)
	UEFI Firmware = "uefi"
)

// Paths of the BIOS boot files on the raw disk's ESP: syslinux's core and
// its menu.
const (
	SyslinuxDir    = "/syslinux"
	SyslinuxConfig = SyslinuxDir + "/syslinux.cfg"
	ldlinuxSys     = SyslinuxDir + "/ldlinux.sys"
	ldlinuxC32     = SyslinuxDir + "/ldlinux.c32"
	// LoaderEntries is the folder of the ESP's Boot Loader Specification
	// entries (systemd-boot's menu), which the BIOS menu repeats.
	LoaderEntries = "/loader/entries"
	LoaderConf    = "/loader/loader.conf"
)

// biosBoot is what the raw writer needs for legacy BIOS boot.
type biosBoot struct {
	core *biosboot.Core
	mbr  []byte // gptmbr.bin
}

func loadBIOSBoot(sl Syslinux) (*biosBoot, error) {
	core, err := biosboot.ReadInstaller(sl.Installer)
	if err != nil {
		return nil, fmt.Errorf("%w (install the Debian package syslinux)", err)
	}
	mbr, err := biosboot.ReadMBR(sl.GPTMBR)
	if err != nil {
		return nil, fmt.Errorf("syslinux GPT MBR: %w (install the Debian package syslinux-common)", err)
	}
	return &biosBoot{core: core, mbr: mbr}, nil
}

// files are the BIOS boot files for an ESP holding files: syslinux's core
// and the menu made from the ESP's loader entries.
func (bb *biosBoot) files(l *Layout, files map[string]Source) (map[string]Source, error) {
	cfg, err := BIOSMenu(files, l.Cmdline)
	if err != nil {
		return nil, err
	}
	return map[string]Source{
		ldlinuxSys:     FromBytes(bb.core.File()),
		ldlinuxC32:     FromBytes(bb.core.LDLinuxC32),
		SyslinuxConfig: FromBytes([]byte(cfg)),
	}, nil
}

// install patches the ESP at byte espOff of f for syslinux (its boot
// sector and its backup, ldlinux.sys's sector list) once the FAT is final.
// The MBR code goes in after the partition table (writeMBR).
func (bb *biosBoot) install(f *os.File, espOff int64) error {
	sectors, _, err := fatfix.FileSectors(f, espOff, ldlinuxSys)
	if err != nil {
		return err
	}
	fsBoot := make([]byte, sector)
	if _, err := f.ReadAt(fsBoot, espOff); err != nil {
		return err
	}
	boot, sys, err := bb.core.Install(fsBoot, uint32(espOff/sector), sectors, SyslinuxDir+"/")
	if err != nil {
		return err
	}
	backup, err := fatfix.BackupBootSector(f, espOff)
	if err != nil {
		return err
	}
	at := []int64{espOff}
	if backup != 0 {
		at = append(at, espOff+backup*sector)
	}
	for _, off := range at {
		if _, err := f.WriteAt(boot, off); err != nil {
			return err
		}
	}
	for i := 0; i < len(sys)/sector; i++ {
		if _, err := f.WriteAt(sys[i*sector:(i+1)*sector], espOff+int64(sectors[i])*sector); err != nil {
			return err
		}
	}
	return nil
}

// writeMBR puts syslinux's GPT MBR code before the protective MBR's disk
// signature and partition table.
func (bb *biosBoot) writeMBR(f *os.File) error {
	_, err := f.WriteAt(bb.mbr, 0)
	return err
}

// BIOSMenu is the syslinux.cfg of the raw disk: the ESP's loader entries
// (Boot Loader Specification type 1 files in /loader/entries: title,
// linux, initrd, options) as syslinux labels named after their files, the
// default and timeout of /loader/loader.conf. So BIOS and UEFI boot the
// same kernel, initramfs and command line from one menu. Without loader
// entries it has one label, kpaas, booting the kernel and initrd with
// cmdline.
func BIOSMenu(esp map[string]Source, cmdline string) (string, error) {
	type entry struct {
		label, title, linux, options string
		initrd                       []string
	}
	var entries []entry
	for _, p := range slices.Sorted(maps.Keys(esp)) {
		if path.Dir(p) != LoaderEntries || path.Ext(p) != ".conf" {
			continue
		}
		e := entry{label: strings.TrimSuffix(path.Base(p), ".conf")}
		err := eachLine(esp[p], func(key, value string) {
			switch key {
			case "title":
				e.title = value
			case "linux":
				e.linux = value
			case "initrd":
				e.initrd = append(e.initrd, value)
			case "options":
				e.options = strings.TrimSpace(e.options + " " + value)
			}
		})
		if err != nil {
			return "", fmt.Errorf("loader entry %s: %w", p, err)
		}
		if e.linux == "" {
			return "", fmt.Errorf("loader entry %s: no linux line", p)
		}
		entries = append(entries, e)
	}
	if len(entries) == 0 {
		entries = []entry{{label: "kpaas", linux: KernelPath, initrd: []string{InitrdPath}, options: cmdline}}
	}
	def, timeout := entries[0].label, 0
	if s, ok := esp[LoaderConf]; ok {
		err := eachLine(s, func(key, value string) {
			switch key {
			case "default":
				v := strings.TrimSuffix(value, ".conf")
				for _, e := range entries {
					if ok, _ := path.Match(v, e.label); ok {
						def = e.label
						break
					}
				}
			case "timeout":
				if n, err := strconv.Atoi(value); err == nil && n > 0 {
					timeout = n
				}
			}
		})
		if err != nil {
			return "", fmt.Errorf("%s: %w", LoaderConf, err)
		}
	}
	var b strings.Builder
	b.WriteString("# The ESP's loader entries (" + LoaderEntries + ") for syslinux: one menu, two loaders.\n")
	fmt.Fprintf(&b, "default %s\n", def)
	if timeout > 0 && len(entries) > 1 {
		fmt.Fprintf(&b, "prompt 1\ntimeout %d\n", timeout*10)
		for _, e := range entries {
			fmt.Fprintf(&b, "say %s: %s\n", e.label, orDefault(e.title, e.label))
		}
	} else {
		b.WriteString("prompt 0\ntimeout 0\n")
	}
	for _, e := range entries {
		fmt.Fprintf(&b, "\nlabel %s\n", e.label)
		if e.title != "" {
			fmt.Fprintf(&b, "  # %s\n", e.title)
		}
		fmt.Fprintf(&b, "  kernel %s\n", e.linux)
		if len(e.initrd) > 0 {
			fmt.Fprintf(&b, "  initrd %s\n", strings.Join(e.initrd, ","))
		}
		if e.options != "" {
			fmt.Fprintf(&b, "  append %s\n", e.options)
		}
	}
	return b.String(), nil
}

func orDefault(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// eachLine calls fn with the key and value of every line of a Boot Loader
// Specification file (key, white space, value; # comments).
func eachLine(s Source, fn func(key, value string)) error {
	r, _, err := s.open()
	if err != nil {
		return err
	}
	defer r.Close()
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		key, value := line, ""
		if i := strings.IndexAny(line, " \t"); i >= 0 {
			key, value = line[:i], strings.TrimSpace(line[i+1:])
		}
		fn(key, value)
	}
	return sc.Err()
}
