// Package earlyboot is what kpaas-init does between the kernel and systemd:
// load the initramfs's kernel modules, find the boot media's partitions by
// name or label, plan and perform the mounts (root squashfs under an
// overlay, the state partition for /var, the bundle read-only at
// /run/kpaas/bundle), and switch root.
//
// The deciding parts are pure and tested on files: Scan reads a sysfs tree,
// Probe and ReadGPT read images, GrowGPT rewrites one (the state partition
// grown to the disk's end), Plan turns what was found into a list of mount
// steps. Only run_linux.go touches the machine.
package earlyboot

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"unicode/utf16"
)

// Device is one block device as sysfs describes it, plus what Probe found
// on it.
type Device struct {
	Name     string // vda2, sr0
	Disk     string // the whole disk of a partition (vda), "" for a disk
	PartN    int    // partition number, 0 for a disk
	PartName string // the GPT partition name (PARTNAME)
	Size     int64  // bytes
	ReadOnly bool   // sysfs ro
	FS       FS     // filled by probing /dev/<Name>
}

// Path is the device node.
func (d Device) Path() string { return "/dev/" + d.Name }

// Scan lists the block devices under sysRoot/class/block (sysRoot is /sys
// on a machine), sorted by name. Loop and RAM disks are left out.
func Scan(sysRoot string) ([]Device, error) {
	dir := filepath.Join(sysRoot, "class", "block")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("listing block devices: %w", err)
	}
	var out []Device
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "loop") || strings.HasPrefix(e.Name(), "ram") {
			continue
		}
		d := Device{Name: e.Name()}
		u, err := readUevent(filepath.Join(dir, e.Name(), "uevent"))
		if err != nil {
			continue // gone while we looked
		}
		if n := u["DEVNAME"]; n != "" {
			d.Name = n
		}
		if u["DEVTYPE"] == "partition" {
			d.PartN, _ = strconv.Atoi(u["PARTN"])
			d.PartName = u["PARTNAME"]
			// The partition's folder sits inside its disk's folder.
			if target, err := filepath.EvalSymlinks(filepath.Join(dir, e.Name())); err == nil {
				d.Disk = filepath.Base(filepath.Dir(target))
			}
		}
		if b, err := os.ReadFile(filepath.Join(dir, e.Name(), "size")); err == nil {
			n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
			d.Size = n * 512
		}
		if b, err := os.ReadFile(filepath.Join(dir, e.Name(), "ro")); err == nil {
			d.ReadOnly = strings.TrimSpace(string(b)) == "1"
		}
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func readUevent(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			m[k] = v
		}
	}
	return m, sc.Err()
}

// FS is what Probe found on a device.
type FS struct {
	Type  string // squashfs, ext4, iso9660, vfat; "" when none is recognised
	Label string
}

// Probe recognises the file system on a device or image by its magic
// numbers and reads its label. An unrecognised device returns FS{}.
func Probe(r io.ReaderAt) FS {
	buf := make([]byte, 64<<10)
	n, _ := r.ReadAt(buf, 0)
	buf = buf[:n]
	at := func(off, size int) []byte {
		if off+size > len(buf) {
			return nil
		}
		return buf[off : off+size]
	}
	switch {
	case bytes.Equal(at(0, 4), []byte("hsqs")):
		return FS{Type: "squashfs"}
	case bytes.Equal(at(1024+56, 2), []byte{0x53, 0xef}):
		return FS{Type: "ext4", Label: cstring(at(1024+120, 16))}
	case bytes.Equal(at(32769, 5), []byte("CD001")):
		// ECMA-119 pads the volume id with spaces; go-diskfs pads it with NULs.
		return FS{Type: "iso9660", Label: strings.TrimRight(string(at(32808, 32)), " \x00")}
	case bytes.Equal(at(510, 2), []byte{0x55, 0xaa}) && bytes.Equal(at(82, 5), []byte("FAT32")):
		return FS{Type: "vfat", Label: fatLabel(at(71, 11))}
	case bytes.Equal(at(510, 2), []byte{0x55, 0xaa}) && bytes.Equal(at(54, 3), []byte("FAT")):
		return FS{Type: "vfat", Label: fatLabel(at(43, 11))}
	}
	return FS{}
}

func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

func fatLabel(b []byte) string {
	l := strings.TrimRight(string(b), " ")
	if l == "NO NAME" {
		return ""
	}
	return l
}

// Partition is one GPT entry.
type Partition struct {
	Number   int // 1-based
	Name     string
	FirstLBA uint64
	LastLBA  uint64
}

// ReadGPT reads the partition names of a GPT disk or image (512-byte
// sectors). Empty entries are skipped.
func ReadGPT(r io.ReaderAt) ([]Partition, error) {
	const sector = 512
	hdr := make([]byte, 92)
	if _, err := r.ReadAt(hdr, sector); err != nil {
		return nil, fmt.Errorf("reading GPT header: %w", err)
	}
	if string(hdr[:8]) != "EFI PART" {
		return nil, errors.New("no GPT header")
	}
	entriesLBA := binary.LittleEndian.Uint64(hdr[72:])
	count := binary.LittleEndian.Uint32(hdr[80:])
	size := binary.LittleEndian.Uint32(hdr[84:])
	if count > 1024 || size < 128 || size > 4096 {
		return nil, fmt.Errorf("implausible GPT: %d entries of %d bytes", count, size)
	}
	table := make([]byte, int(count)*int(size))
	if _, err := r.ReadAt(table, int64(entriesLBA)*sector); err != nil {
		return nil, fmt.Errorf("reading GPT entries: %w", err)
	}
	var out []Partition
	for i := 0; i < int(count); i++ {
		e := table[i*int(size) : (i+1)*int(size)]
		if bytes.Equal(e[:16], make([]byte, 16)) {
			continue
		}
		u := make([]uint16, 36)
		for j := range u {
			u[j] = binary.LittleEndian.Uint16(e[56+2*j:])
		}
		name := string(utf16.Decode(u))
		if k := strings.IndexByte(name, 0); k >= 0 {
			name = name[:k]
		}
		out = append(out, Partition{Number: i + 1, Name: name,
			FirstLBA: binary.LittleEndian.Uint64(e[32:]), LastLBA: binary.LittleEndian.Uint64(e[40:])})
	}
	return out, nil
}

// FillPartNames sets PartName on partitions whose uevent had none, from
// their disk's GPT, which open returns.
func FillPartNames(devs []Device, open func(disk string) (io.ReaderAt, func(), error)) {
	names := map[string][]Partition{}
	for i, d := range devs {
		if d.PartN == 0 || d.PartName != "" || d.Disk == "" {
			continue
		}
		parts, ok := names[d.Disk]
		if !ok {
			if r, done, err := open(d.Disk); err == nil {
				parts, _ = ReadGPT(r)
				done()
			}
			names[d.Disk] = parts
		}
		for _, p := range parts {
			if p.Number == d.PartN {
				devs[i].PartName = p.Name
			}
		}
	}
}
