// Package fatfix finishes a FAT12/16/32 file system written by go-diskfs so
// that it is reproducible and fsck-clean: every directory entry gets one
// fixed timestamp, the volume gets a chosen serial number, ".." entries that
// point at the root use cluster 0 (as the FAT specification and fsck.vfat
// want), and the FAT32 free-cluster summary is filled in.
package fatfix

import (
	"encoding/binary"
	"fmt"
	"io"
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
	bs := make([]byte, 512)
	if _, err := dev.ReadAt(bs, start); err != nil {
		return fmt.Errorf("reading FAT boot sector: %w", err)
	}
	if bs[510] != 0x55 || bs[511] != 0xaa {
		return fmt.Errorf("no FAT boot sector at offset %d", start)
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
	serialOff := int64(39)
	if fatSectors == 0 {
		f.fat32 = true
		fatSectors = int64(le.Uint32(bs[36:]))
		f.rootCluster = le.Uint32(bs[44:])
		serialOff = 67
	}
	if f.bps == 0 || f.spc == 0 || f.numFATs == 0 {
		return fmt.Errorf("invalid FAT boot sector at offset %d", start)
	}
	f.fatStart = reserved * f.bps
	f.fatBytes = fatSectors * f.bps
	f.rootStart = f.fatStart + f.numFATs*f.fatBytes
	f.rootBytes = (rootEntries*32 + f.bps - 1) / f.bps * f.bps
	f.dataStart = f.rootStart + f.rootBytes
	f.clusters = uint32((total*f.bps - f.dataStart) / (f.spc * f.bps))
	f.fat12 = !f.fat32 && f.clusters < 4085
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
	var err error
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
