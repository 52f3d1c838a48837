// Package fatfix finishes a FAT12/16/32 file system written by go-diskfs so
// that it is reproducible and fsck-clean: every directory entry gets one
// fixed timestamp, the volume gets a chosen serial number, ".." entries that
// point at the root use cluster 0 (as the FAT specification and fsck.vfat
// want), and the FAT32 free-cluster summary is filled in. FileSectors
// tells where a file's bytes are (for boot loaders that load by sector).
package fatfix

import (
	"encoding/binary"
	"fmt"
	"io"
	"strings"
	"time"
)

// Device is the storage holding the file system.
type Device interface {
	io.ReaderAt
	io.WriterAt
}

type fs struct {
	dev                Device
	start              int64
	bps, spc           int64
	fatStart, fatBytes int64
	numFATs            int64
	rootStart          int64 // FAT12/16: fixed root directory region
	rootBytes          int64
	dataStart          int64
	rootCluster        uint32
	fat32              bool
	fat12              bool
	clusters           uint32
	date, tm           uint16
	used               map[uint32]bool // clusters reachable from the root
}

// Fix rewrites the file system that starts at byte start of dev.
func Fix(dev Device, start int64, t time.Time, serial uint32) error {
	f, bs, err := open(dev, start)
	if err != nil {
		return err
	}
	le := binary.LittleEndian
	total := int64(le.Uint16(bs[19:]))
	if total == 0 {
		total = int64(le.Uint32(bs[32:]))
	}
	serialOff := int64(39)
	if f.fat32 {
		serialOff = 67
	}
	f.date, f.tm = dosTime(t)

	// go-diskfs v1.9 can size the FAT two entries short of the cluster
	// count (it forgets the two reserved entries). Shrink the volume to
	// the clusters its FAT addresses, as mkfs.fat would have.
	entryBits := int64(16)
	switch {
	case f.fat32:
		entryBits = 32
	case f.fat12:
		entryBits = 12
	}
	if fit := f.fatBytes*8/entryBits - 2; int64(f.clusters) > fit {
		f.clusters = uint32(fit)
		total = (f.dataStart + fit*f.spc*f.bps) / f.bps
		if err := f.setTotal(bs, total); err != nil {
			return err
		}
	}

	// serial number in the boot sector and, on FAT32, its backup
	sn := le.AppendUint32(nil, serial)
	if _, err := dev.WriteAt(sn, start+serialOff); err != nil {
		return err
	}
	if f.fat32 {
		if backup := int64(le.Uint16(bs[50:])); backup != 0 && backup != 0xffff {
			if _, err := dev.WriteAt(sn, start+backup*f.bps+serialOff); err != nil {
				return err
			}
		}
	}

	f.used = map[uint32]bool{}
	if f.fat32 {
		err = f.markChain(f.rootCluster)
	}
	if err != nil {
		return err
	}
	if f.fat32 {
		err = f.fixDir(f.rootCluster, 0, 0)
	} else {
		err = f.fixRegion(f.rootStart, f.rootBytes, 0, 0)
	}
	if err != nil {
		return err
	}
	if !f.fat12 {
		if err := f.freeLost(); err != nil {
			return err
		}
	}
	if f.fat32 {
		return f.fixFSInfo(le.Uint16(bs[48:]))
	}
	return nil
}

// open reads the boot sector of the file system at byte start of dev.
func open(dev Device, start int64) (*fs, []byte, error) {
	bs := make([]byte, 512)
	if _, err := dev.ReadAt(bs, start); err != nil {
		return nil, nil, fmt.Errorf("reading FAT boot sector: %w", err)
	}
	if bs[510] != 0x55 || bs[511] != 0xaa {
		return nil, nil, fmt.Errorf("no FAT boot sector at offset %d", start)
	}
	le := binary.LittleEndian
	f := &fs{dev: dev, start: start}
	f.bps = int64(le.Uint16(bs[11:]))
	f.spc = int64(bs[13])
	reserved := int64(le.Uint16(bs[14:]))
	f.numFATs = int64(bs[16])
	rootEntries := int64(le.Uint16(bs[17:]))
	total := int64(le.Uint16(bs[19:]))
	if total == 0 {
		total = int64(le.Uint32(bs[32:]))
	}
	fatSectors := int64(le.Uint16(bs[22:]))
	if fatSectors == 0 {
		f.fat32 = true
		fatSectors = int64(le.Uint32(bs[36:]))
		f.rootCluster = le.Uint32(bs[44:])
	}
	if f.bps == 0 || f.spc == 0 || f.numFATs == 0 {
		return nil, nil, fmt.Errorf("invalid FAT boot sector at offset %d", start)
	}
	f.fatStart = reserved * f.bps
	f.fatBytes = fatSectors * f.bps
	f.rootStart = f.fatStart + f.numFATs*f.fatBytes
	f.rootBytes = (rootEntries*32 + f.bps - 1) / f.bps * f.bps
	f.dataStart = f.rootStart + f.rootBytes
	f.clusters = uint32((total*f.bps - f.dataStart) / (f.spc * f.bps))
	f.fat12 = !f.fat32 && f.clusters < 4085
	return f, bs, nil
}

// markChain records the clusters of a chain as in use.
func (f *fs) markChain(c uint32) error {
	for n := 0; c >= 2 && !f.endOfChain(c); n++ {
		if n > int(f.clusters) || f.used[c] {
			return fmt.Errorf("FAT cluster chain loops or is shared at %d", c)
		}
		f.used[c] = true
		next, err := f.next(c)
		if err != nil {
			return err
		}
		c = next
	}
	return nil
}

// freeLost frees clusters that are allocated in the FAT but belong to no
// file or directory (go-diskfs v1.9 leaks one now and then; fsck.vfat
// reports them as "unused").
func (f *fs) freeLost() error {
	size := int64(2)
	if f.fat32 {
		size = 4
	}
	fat := make([]byte, f.fatBytes)
	if _, err := f.dev.ReadAt(fat, f.start+f.fatStart); err != nil {
		return err
	}
	changed := false
	for c := uint32(2); c < f.clusters+2 && int64(c+1)*size <= f.fatBytes; c++ {
		e := fat[int64(c)*size : int64(c+1)*size]
		var v uint32
		if f.fat32 {
			v = binary.LittleEndian.Uint32(e) & 0x0fffffff
		} else {
			v = uint32(binary.LittleEndian.Uint16(e))
		}
		if v != 0 && !f.used[c] {
			if f.fat32 {
				binary.LittleEndian.PutUint32(e, binary.LittleEndian.Uint32(e)&0xf0000000)
			} else {
				binary.LittleEndian.PutUint16(e, 0)
			}
			changed = true
		}
	}
	if !changed {
		return nil
	}
	for i := int64(0); i < f.numFATs; i++ {
		if _, err := f.dev.WriteAt(fat, f.start+f.fatStart+i*f.fatBytes); err != nil {
			return err
		}
	}
	return nil
}

// setTotal writes the total sector count into the boot sector (and its
// FAT32 backup).
func (f *fs) setTotal(bs []byte, total int64) error {
	le := binary.LittleEndian
	if le.Uint16(bs[19:]) != 0 {
		le.PutUint16(bs[19:], uint16(total))
	} else {
		le.PutUint32(bs[32:], uint32(total))
	}
	if _, err := f.dev.WriteAt(bs, f.start); err != nil {
		return err
	}
	if f.fat32 {
		if backup := int64(le.Uint16(bs[50:])); backup != 0 && backup != 0xffff {
			if _, err := f.dev.WriteAt(bs, f.start+backup*f.bps); err != nil {
				return err
			}
		}
	}
	return nil
}

func dosTime(t time.Time) (date, tm uint16) {
	t = t.UTC()
	if t.Year() < 1980 {
		t = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	date = uint16((t.Year()-1980)<<9 | int(t.Month())<<5 | t.Day())
	tm = uint16(t.Hour()<<11 | t.Minute()<<5 | t.Second()/2)
	return date, tm
}

func (f *fs) next(c uint32) (uint32, error) {
	switch {
	case f.fat32:
		b := make([]byte, 4)
		if _, err := f.dev.ReadAt(b, f.start+f.fatStart+int64(c)*4); err != nil {
			return 0, err
		}
		return binary.LittleEndian.Uint32(b) & 0x0fffffff, nil
	case f.fat12:
		b := make([]byte, 2)
		if _, err := f.dev.ReadAt(b, f.start+f.fatStart+int64(c)*3/2); err != nil {
			return 0, err
		}
		v := uint32(binary.LittleEndian.Uint16(b))
		if c&1 == 1 {
			return v >> 4, nil
		}
		return v & 0xfff, nil
	default:
		b := make([]byte, 2)
		if _, err := f.dev.ReadAt(b, f.start+f.fatStart+int64(c)*2); err != nil {
			return 0, err
		}
		return uint32(binary.LittleEndian.Uint16(b)), nil
	}
}

func (f *fs) endOfChain(c uint32) bool {
	switch {
	case f.fat32:
		return c >= 0x0ffffff8
	case f.fat12:
		return c >= 0xff8
	default:
		return c >= 0xfff8
	}
}

// fixDir walks a directory's cluster chain. self is the cluster its
// children's ".." must name (0 for the root), parent the one its own ".."
// must name.
func (f *fs) fixDir(cluster, self, parent uint32) error {
	csize := f.spc * f.bps
	for seen := 0; cluster >= 2 && !f.endOfChain(cluster); seen++ {
		if seen > int(f.clusters) {
			return fmt.Errorf("FAT cluster chain loops at %d", cluster)
		}
		off := f.dataStart + int64(cluster-2)*csize
		if err := f.fixRegion(off, csize, self, parent); err != nil {
			return err
		}
		n, err := f.next(cluster)
		if err != nil {
			return err
		}
		cluster = n
	}
	return nil
}

// fixRegion rewrites the entries of one piece of a directory.
func (f *fs) fixRegion(off, n int64, self, parent uint32) error {
	b := make([]byte, n)
	if _, err := f.dev.ReadAt(b, f.start+off); err != nil {
		return err
	}
	le := binary.LittleEndian
	var subdirs []uint32
	for i := int64(0); i+32 <= n; i += 32 {
		e := b[i : i+32]
		if e[0] == 0 {
			break
		}
		if e[0] == 0xe5 || e[11]&0x3f == 0x0f { // deleted, long name
			continue
		}
		e[13] = 0
		le.PutUint16(e[14:], f.tm)
		le.PutUint16(e[16:], f.date)
		le.PutUint16(e[18:], f.date)
		le.PutUint16(e[22:], f.tm)
		le.PutUint16(e[24:], f.date)
		first := uint32(le.Uint16(e[20:]))<<16 | uint32(le.Uint16(e[26:]))
		if !f.fat32 {
			first &= 0xffff
		}
		if e[11]&0x10 == 0 {
			if e[11]&0x08 == 0 { // a file (not the volume label)
				if err := f.markChain(first); err != nil {
					return err
				}
			}
			continue
		}
		name := string(e[0:11])
		switch name {
		case ".          ":
		case "..         ":
			// ".." names its parent; the root is cluster 0
			le.PutUint16(e[20:], uint16(parent>>16))
			le.PutUint16(e[26:], uint16(parent))
		default:
			if err := f.markChain(first); err != nil {
				return err
			}
			subdirs = append(subdirs, first)
		}
	}
	if _, err := f.dev.WriteAt(b, f.start+off); err != nil {
		return err
	}
	for _, c := range subdirs {
		if err := f.fixDir(c, c, self); err != nil {
			return err
		}
	}
	return nil
}

// fixFSInfo fills in the free-cluster count and the next-free hint.
func (f *fs) fixFSInfo(sector uint16) error {
	if sector == 0 || sector == 0xffff {
		return nil
	}
	fat := make([]byte, f.fatBytes)
	if _, err := f.dev.ReadAt(fat, f.start+f.fatStart); err != nil {
		return err
	}
	var free, first uint32
	for c := uint32(2); c < f.clusters+2 && int64(c)*4+4 <= f.fatBytes; c++ {
		if binary.LittleEndian.Uint32(fat[c*4:])&0x0fffffff == 0 {
			if free == 0 {
				first = c
			}
			free++
		}
	}
	b := make([]byte, 8)
	binary.LittleEndian.PutUint32(b, free)
	binary.LittleEndian.PutUint32(b[4:], first)
	_, err := f.dev.WriteAt(b, f.start+int64(sector)*f.bps+488)
	return err
}

// FileSectors returns the sectors, relative to the file system's start,
// that hold the file at path (an absolute path of 8.3 names, e.g.
// /SYSLINUX/LDLINUX.SYS; case does not matter), in file order, and the
// file's size. Long names are not read.
func FileSectors(dev Device, start int64, path string) ([]uint64, int64, error) {
	f, _, err := open(dev, start)
	if err != nil {
		return nil, 0, err
	}
	names := strings.Split(strings.Trim(path, "/"), "/")
	dir := f.rootCluster // 0 on FAT12/16: the fixed root region
	for i, name := range names {
		want, err := shortName(name)
		if err != nil {
			return nil, 0, fmt.Errorf("%s: %w", path, err)
		}
		e, err := f.lookup(dir, want)
		if err != nil {
			return nil, 0, fmt.Errorf("%s: %w", path, err)
		}
		first := uint32(binary.LittleEndian.Uint16(e[20:]))<<16 | uint32(binary.LittleEndian.Uint16(e[26:]))
		isDir := e[11]&0x10 != 0
		if i < len(names)-1 {
			if !isDir {
				return nil, 0, fmt.Errorf("%s: %s is not a folder", path, name)
			}
			dir = first
			continue
		}
		if isDir {
			return nil, 0, fmt.Errorf("%s is a folder", path)
		}
		size := int64(binary.LittleEndian.Uint32(e[28:]))
		var out []uint64
		per := f.spc * f.bps / 512
		for c, n := first, 0; c >= 2 && !f.endOfChain(c) && int64(len(out))*512 < size; n++ {
			if n > int(f.clusters) {
				return nil, 0, fmt.Errorf("%s: FAT cluster chain loops", path)
			}
			s0 := uint64((f.dataStart + int64(c-2)*f.spc*f.bps) / 512)
			for k := int64(0); k < per; k++ {
				out = append(out, s0+uint64(k))
			}
			if c, err = f.next(c); err != nil {
				return nil, 0, err
			}
		}
		if int64(len(out))*512 < size {
			return nil, 0, fmt.Errorf("%s: its clusters hold %d of its %d bytes", path, len(out)*512, size)
		}
		return out[:(size+511)/512], size, nil
	}
	return nil, 0, fmt.Errorf("%s: not a file", path)
}

// shortName is the 11-byte directory entry name of an 8.3 name.
func shortName(name string) (string, error) {
	base, ext, _ := strings.Cut(strings.ToUpper(name), ".")
	if base == "" || len(base) > 8 || len(ext) > 3 {
		return "", fmt.Errorf("%q is not an 8.3 name", name)
	}
	return fmt.Sprintf("%-8s%-3s", base, ext), nil
}

// lookup finds the entry named want (11 bytes) in the folder whose first
// cluster is dir (0: the FAT12/16 root region).
func (f *fs) lookup(dir uint32, want string) ([]byte, error) {
	var regions [][2]int64
	if dir == 0 && !f.fat32 {
		regions = append(regions, [2]int64{f.rootStart, f.rootBytes})
	} else {
		csize := f.spc * f.bps
		for n := 0; dir >= 2 && !f.endOfChain(dir); n++ {
			if n > int(f.clusters) {
				return nil, fmt.Errorf("FAT cluster chain loops at %d", dir)
			}
			regions = append(regions, [2]int64{f.dataStart + int64(dir-2)*csize, csize})
			next, err := f.next(dir)
			if err != nil {
				return nil, err
			}
			dir = next
		}
	}
	for _, r := range regions {
		b := make([]byte, r[1])
		if _, err := f.dev.ReadAt(b, f.start+r[0]); err != nil {
			return nil, err
		}
		for i := 0; i+32 <= len(b); i += 32 {
			e := b[i : i+32]
			if e[0] == 0 {
				return nil, fmt.Errorf("no %q", strings.TrimSpace(want))
			}
			if e[0] == 0xe5 || e[11]&0x0f == 0x0f || e[11]&0x08 != 0 { // deleted, long name, label
				continue
			}
			if string(e[:11]) == want {
				return e, nil
			}
		}
	}
	return nil, fmt.Errorf("no %q", strings.TrimSpace(want))
}

// BackupBootSector is the sector (relative to the file system's start) of
// a FAT32 file system's backup boot sector, 0 if it has none.
func BackupBootSector(dev Device, start int64) (int64, error) {
	f, bs, err := open(dev, start)
	if err != nil {
		return 0, err
	}
	if !f.fat32 {
		return 0, nil
	}
	b := int64(binary.LittleEndian.Uint16(bs[50:]))
	if b == 0xffff {
		b = 0
	}
	return b, nil
}
