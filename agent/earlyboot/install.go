package earlyboot

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"strings"

	"kpaas.dev/appliance/internal/diskplan"
)

// InstallAuto is kpaas.install's value for "the only empty disk".
const InstallAuto = "auto"

// ISOPlan is the ISO's install plan (internal/diskplan): the raw disk
// image described by the ISO's files.
const ISOPlan = "kpaas/install/plan.json"

// DiskInfo is what the first sectors of a whole disk say.
type DiskInfo struct {
	Table string // "gpt", "mbr" or ""
	GUID  string // the GPT disk GUID, lower case
}

// InspectDisk reads a disk's partition table type and GPT disk GUID.
func InspectDisk(r io.ReaderAt) DiskInfo {
	b := make([]byte, 1024)
	if n, _ := r.ReadAt(b, 0); n < len(b) {
		return DiskInfo{}
	}
	if string(b[512:520]) == "EFI PART" {
		return DiskInfo{Table: "gpt", GUID: guidString(b[512+56 : 512+72])}
	}
	if b[510] == 0x55 && b[511] == 0xaa && !bytes.Equal(b[446:510], make([]byte, 64)) {
		return DiskInfo{Table: "mbr"}
	}
	return DiskInfo{}
}

// guidString formats a GUID as stored on disk (the first three fields
// little-endian).
func guidString(g []byte) string {
	le := binary.LittleEndian
	return fmt.Sprintf("%08x-%04x-%04x-%x-%x", le.Uint32(g[0:]), le.Uint16(g[4:]), le.Uint16(g[6:]), g[8:10], g[10:16])
}

// Choice is the disk an install goes to.
type Choice struct {
	Disk Device
	// Installed: the disk carries the plan's disk GUID already (this
	// medium was installed on it); the boot goes on from it.
	Installed bool
	// Held says what an explicitly named target held before ("" for an
	// empty disk).
	Held string
}

// ChooseTarget picks the install target among the scanned devices:
// want is a device path (/dev/sda) or InstallAuto, the only empty disk
// (no partitions, no partition table, no file system) that is large
// enough. The medium's own disk, CD drives and read-only disks are never
// chosen. A disk that carries the plan's disk GUID is this installation
// already: it is chosen, with Installed set, so that booting the
// installer again boots the installed system instead of installing twice.
// info reads a whole disk's first sectors.
func ChooseTarget(devs []Device, found Found, plan *diskplan.Plan, want string, info func(Device) DiskInfo) (Choice, error) {
	medium := ""
	if found.ISO != nil {
		medium = found.ISO.Name
		if found.ISO.Disk != "" {
			medium = found.ISO.Disk
		}
	}
	parts := map[string]int{}
	for _, d := range devs {
		if d.Disk != "" {
			parts[d.Disk]++
		}
	}
	var disks []Device
	for _, d := range devs {
		if d.PartN == 0 && d.Disk == "" {
			disks = append(disks, d)
		}
	}
	// each disk's first sectors, read once and only for disks that could
	// take the install
	infos := map[string]DiskInfo{}
	diskInfo := func(d Device) DiskInfo {
		in, ok := infos[d.Name]
		if !ok {
			in = info(d)
			infos[d.Name] = in
		}
		return in
	}
	// why a disk cannot take the install, "" if it can
	unfit := func(d Device) string {
		switch {
		case d.Name == medium:
			return "the installer's own medium"
		case strings.HasPrefix(d.Name, "sr") || strings.HasPrefix(d.Name, "fd") || strings.HasPrefix(d.Name, "zram"):
			return "not a disk"
		case d.ReadOnly:
			return "read-only"
		case d.Size < plan.DiskSize:
			return fmt.Sprintf("%s, the image needs %s", humanSize(d.Size), humanSize(plan.DiskSize))
		}
		return ""
	}
	installed := func(d Device) bool {
		return plan.DiskGUID != "" && strings.EqualFold(diskInfo(d).GUID, plan.DiskGUID)
	}

	if want != InstallAuto {
		for _, d := range disks {
			if d.Path() != want {
				continue
			}
			if why := unfit(d); why != "" {
				return Choice{}, fmt.Errorf("kpaas.install=%s: %s", want, why)
			}
			if installed(d) {
				return Choice{Disk: d, Installed: true}, nil
			}
			return Choice{Disk: d, Held: held(d, diskInfo(d), parts[d.Name])}, nil
		}
		var names []string
		for _, d := range disks {
			names = append(names, d.Path())
		}
		return Choice{}, fmt.Errorf("kpaas.install=%s: no such disk (disks: %s)", want, strings.Join(names, ", "))
	}

	var empty []Device
	var report []string
	for _, d := range disks {
		if unfit(d) == "" && installed(d) {
			return Choice{Disk: d, Installed: true}, nil
		}
	}
	for _, d := range disks {
		why := unfit(d)
		if why == "" {
			why = held(d, diskInfo(d), parts[d.Name])
		}
		if why == "" {
			empty = append(empty, d)
			continue
		}
		report = append(report, d.Path()+": "+why)
	}
	switch len(empty) {
	case 1:
		return Choice{Disk: empty[0]}, nil
	case 0:
		return Choice{}, fmt.Errorf("kpaas.install=auto: no empty disk of at least %s (%s); name one with kpaas.install=/dev/…", humanSize(plan.DiskSize), orNone(report))
	}
	var names []string
	for _, d := range empty {
		names = append(names, d.Path())
	}
	return Choice{}, fmt.Errorf("kpaas.install=auto: %d empty disks (%s): name one with kpaas.install=/dev/…", len(empty), strings.Join(names, ", "))
}

// held says what a disk holds, "" when it is empty.
func held(d Device, in DiskInfo, parts int) string {
	switch {
	case parts > 0:
		return fmt.Sprintf("holds %d partitions", parts)
	case in.Table != "":
		return "holds a " + in.Table + " partition table"
	case d.FS.Type != "":
		return "holds a " + d.FS.Type + " file system"
	}
	return ""
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "no disks"
	}
	return strings.Join(s, "; ")
}
