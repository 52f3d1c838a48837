// Package biosboot makes a GPT disk image boot under legacy BIOS with
// syslinux, as the syslinux installer (its libinstaller) does, but on an
// image file, without mounts: syslinux's GPT MBR code loads the first
// sector of the partition marked legacy-BIOS-bootable, the ESP; that is
// syslinux's FAT boot sector, which loads ldlinux.sys by a sector list
// patched into both; ldlinux.sys loads ldlinux.c32 and reads syslinux.cfg
// from the same FAT file system.
//
// Debian ships the FAT boot sector, ldlinux.sys and the ldlinux.c32 that
// matches it only inside the installer (/usr/bin/syslinux, package
// syslinux); ReadInstaller takes them out of it. The GPT MBR code is a
// file (gptmbr.bin, package syslinux-common).
//
// Lifecycle: the caller writes LDLinuxSys (Core.File: the image followed
// by an empty ADV) and LDLinuxC32 into the FAT file system, finds the
// sectors ldlinux.sys landed on, and calls Core.Install with them; it
// returns the boot sector and the patched ldlinux.sys to write in place.
package biosboot

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
)

// Byte layouts of syslinux 6 (libinstaller/syslxint.h, setadv.c).
const (
	sectorSize   = 512
	ldlinuxMagic = 0x3eb202fe // the patch area of ldlinux.sys; also the boot sector's bsMagic
	advMagic1    = 0x5a2d2fa5 // ADV head
	advMagic2    = 0xa3041767 // ADV checksum total
	advMagic3    = 0xdd28bf64 // ADV tail
	advSize      = 512        // one ADV copy; ldlinux.sys is followed by two
	// bsMagicOff is where the FAT boot sector carries ldlinuxMagic.
	bsMagicOff = 0x1f8
	// FAT boot sector pieces syslinux takes over: the jump and OEM name
	// (bsHead) and the code after the FAT32 BPB up to the signature
	// (bsCode); the BPB in between stays the file system's.
	bsHeadLen = 11
	bsCodeOff = 90
	bsCodeEnd = 510
	// bsHiddenOff is the BPB's hidden sectors: the partition's first LBA.
	bsHiddenOff = 28
	// MBRCodeLen is the boot code of an MBR: before the disk signature.
	MBRCodeLen = 440
)

// AttrLegacyBIOSBootable is the GPT partition attribute (bit 2) gptmbr.bin
// looks for.
const AttrLegacyBIOSBootable = 1 << 2

// Core is the syslinux core for a FAT file system.
type Core struct {
	BootSector []byte // ldlinux.bss: 512 bytes
	LDLinuxSys []byte // ldlinux.sys, unpatched, a whole number of sectors, without its ADV
	LDLinuxC32 []byte // the ldlinux.c32 built with it
}

// ReadInstaller takes the core out of the syslinux installer at path
// (Debian's /usr/bin/syslinux), where syslinux's build embeds the boot
// sector, ldlinux.sys and ldlinux.c32 as byte arrays in this order in
// .data, and their lengths in .rodata. Every piece is checked: the boot
// sector's magic and signature, ldlinux.sys's patch area, ldlinux.c32's
// ELF header, and each length against the installer's own.
func ReadInstaller(path string) (*Core, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("syslinux installer: %w", err)
	}
	defer f.Close()
	c, err := readInstaller(f)
	if err != nil {
		return nil, fmt.Errorf("syslinux installer %s: %w", path, err)
	}
	return c, nil
}

func readInstaller(f *elf.File) (*Core, error) {
	sec := func(name string) ([]byte, error) {
		s := f.Section(name)
		if s == nil {
			return nil, fmt.Errorf("no %s section", name)
		}
		return s.Data()
	}
	data, err := sec(".data")
	if err != nil {
		return nil, err
	}
	ro, err := sec(".rodata")
	if err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	lengths := map[uint32]bool{}
	for i := 0; i+4 <= len(ro); i += 4 {
		lengths[le.Uint32(ro[i:])] = true
	}

	// the boot sector: a jump, ldlinuxMagic at bsMagic, 55 AA
	bss := -1
	for i := 0; i+sectorSize <= len(data); i += 16 {
		b := data[i : i+sectorSize]
		if b[0] == 0xeb && b[510] == 0x55 && b[511] == 0xaa && le.Uint32(b[bsMagicOff:]) == ldlinuxMagic {
			bss = i
			break
		}
	}
	if bss < 0 || !lengths[sectorSize] {
		return nil, errors.New("no syslinux FAT boot sector found")
	}
	// ldlinux.sys follows it, with its patch area in its first sector
	sys := bss + sectorSize
	if pa := patchArea(data[sys:min(sys+sectorSize, len(data))]); pa < 0 {
		return nil, errors.New("no ldlinux.sys after the boot sector")
	}
	// ldlinux.c32 follows ldlinux.sys: an ELF32 file
	c32 := bytes.Index(data[sys:], []byte("\x7fELF\x01\x01\x01"))
	if c32 < 0 {
		return nil, errors.New("no ldlinux.c32 after ldlinux.sys")
	}
	c32 += sys
	h := data[c32:]
	if len(h) < 52 {
		return nil, errors.New("ldlinux.c32 cut short")
	}
	c32Len := int(le.Uint32(h[0x20:])) + int(le.Uint16(h[0x2e:]))*int(le.Uint16(h[0x30:])) // section headers come last
	if c32Len > len(h) || !lengths[uint32(c32Len)] {
		return nil, errors.New("cannot tell ldlinux.c32's length")
	}
	if _, err := elf.NewFile(bytes.NewReader(h[:c32Len])); err != nil {
		return nil, fmt.Errorf("ldlinux.c32: %w", err)
	}
	// ldlinux.sys's length: whole sectors up to the alignment padding
	// before ldlinux.c32, as the installer says
	sysLen := (c32 - sys) &^ (sectorSize - 1)
	if sysLen == 0 || c32-sys-sysLen >= 64 || !lengths[uint32(sysLen)] {
		return nil, errors.New("cannot tell ldlinux.sys's length (want a whole number of sectors)")
	}
	return &Core{
		BootSector: bytes.Clone(data[bss : bss+sectorSize]),
		LDLinuxSys: bytes.Clone(data[sys : sys+sysLen]),
		LDLinuxC32: bytes.Clone(h[:c32Len]),
	}, nil
}

// patchArea is the offset of ldlinuxMagic (4-byte aligned) in b, or -1.
func patchArea(b []byte) int {
	for i := 0; i+4 <= len(b); i += 4 {
		if binary.LittleEndian.Uint32(b[i:]) == ldlinuxMagic {
			return i
		}
	}
	return -1
}

// File is the content of ldlinux.sys as written to the file system: the
// image followed by two copies of an empty ADV (the auxiliary data vector
// syslinux keeps its boot-once settings in).
func (c *Core) File() []byte {
	adv := make([]byte, 2*advSize)
	le := binary.LittleEndian
	le.PutUint32(adv[0:], advMagic1)
	le.PutUint32(adv[4:], advMagic2) // the checksum of an all-zero payload
	le.PutUint32(adv[advSize-4:], advMagic3)
	copy(adv[advSize:], adv[:advSize])
	return append(bytes.Clone(c.LDLinuxSys), adv...)
}

// Sectors is the number of sectors ldlinux.sys (File) takes.
func (c *Core) Sectors() int { return len(c.LDLinuxSys)/sectorSize + 2 }

// Install patches a copy of ldlinux.sys and of the boot sector, as
// syslinux_patch does: sectors are the file system sectors (relative to
// its start) that File landed on, in file order (at least Sectors); dir
// is the folder of ldlinux.sys, e.g. "/syslinux/". It returns the boot
// sector to write over fsBoot (the file system's boot sector: its BPB is
// kept, the hidden sectors set to partLBA, the partition's first sector)
// and the patched ldlinux.sys image to write over the file's first
// sectors.
func (c *Core) Install(fsBoot []byte, partLBA uint32, sectors []uint64, dir string) (boot, sys []byte, err error) {
	if len(fsBoot) != sectorSize {
		return nil, nil, errors.New("the file system's boot sector must be 512 bytes")
	}
	nsect := c.Sectors()
	if len(sectors) < nsect {
		return nil, nil, fmt.Errorf("ldlinux.sys spans %d sectors, want %d", len(sectors), nsect)
	}
	le := binary.LittleEndian
	bs := bytes.Clone(c.BootSector)
	sys = bytes.Clone(c.LDLinuxSys)
	pa := patchArea(sys)
	if pa < 0 {
		return nil, nil, errors.New("ldlinux.sys has no patch area")
	}
	epa := int(le.Uint16(sys[pa+22:]))
	if epa+20 > len(sys) {
		return nil, nil, errors.New("ldlinux.sys: extended patch area out of range")
	}
	field := func(off int) int { return int(le.Uint16(sys[epa+off:])) }
	for _, r := range [][2]int{{field(0), 16}, {field(2), field(4)}, {field(10), 10 * field(12)}} {
		if r[0]+r[1] > len(sys) {
			return nil, nil, errors.New("ldlinux.sys: patch field out of range")
		}
	}
	// the first sector's address goes into the boot sector
	p0, p1 := field(14), field(16)
	if p0+4 > bsCodeEnd || p1+4 > bsCodeEnd {
		return nil, nil, errors.New("ldlinux.sys: sector pointer out of the boot sector")
	}
	le.PutUint32(bs[p0:], uint32(sectors[0]))
	le.PutUint32(bs[p1:], uint32(sectors[0]>>32))
	rest := sectors[1:nsect]

	dw := len(sys) / 4
	le.PutUint16(sys[pa+8:], uint16(nsect-2)) // data sectors, without the ADV
	le.PutUint16(sys[pa+10:], 2)              // ADV sectors
	le.PutUint32(sys[pa+12:], uint32(dw))

	// the other sectors as extents
	ext, n := field(10), field(12)
	if err := extents(sys[ext:ext+10*n], n, rest[:len(rest)-2]); err != nil {
		return nil, nil, err
	}
	adv := field(0)
	le.PutUint64(sys[adv:], rest[len(rest)-2])
	le.PutUint64(sys[adv+8:], rest[len(rest)-1])

	d, dlen := field(2), field(4)
	if len(dir)+1 > dlen {
		return nil, nil, fmt.Errorf("ldlinux.sys: folder %q longer than %d bytes", dir, dlen-1)
	}
	copy(sys[d:d+dlen], append([]byte(dir), 0))

	le.PutUint32(sys[pa+16:], 0)
	sum := uint32(ldlinuxMagic)
	for i := 0; i < dw; i++ {
		sum -= le.Uint32(sys[4*i:])
	}
	le.PutUint32(sys[pa+16:], sum)

	boot = bytes.Clone(fsBoot)
	copy(boot[:bsHeadLen], bs[:bsHeadLen])
	copy(boot[bsCodeOff:bsCodeEnd], bs[bsCodeOff:bsCodeEnd])
	le.PutUint32(boot[bsHiddenOff:], partLBA)
	return boot, sys, nil
}

// extents writes the sector list as syslinux's extents (lba uint64, len
// uint16): runs of consecutive sectors, none crossing a 64 KiB boundary of
// where ldlinux.sys is loaded (0x8000, after its first sector).
func extents(b []byte, max int, sectors []uint64) error {
	clear(b)
	le := binary.LittleEndian
	addr := uint32(0x8000)
	var base uint32
	var lba uint64
	n, count := 0, 0
	flush := func() error {
		if n == 0 {
			return nil
		}
		if count >= max || 10*count+10 > len(b) {
			return fmt.Errorf("ldlinux.sys is in more than %d pieces", max)
		}
		le.PutUint64(b[10*count:], lba)
		le.PutUint16(b[10*count+8:], uint16(n))
		count++
		return nil
	}
	for _, s := range sectors {
		if n > 0 {
			x := uint32(n+1) * sectorSize
			if s == lba+uint64(n) && x < 65536 && (addr^(base+x-1))&0xffff0000 == 0 {
				n++
				addr += sectorSize
				continue
			}
			if err := flush(); err != nil {
				return err
			}
		}
		base, lba, n = addr, s, 1
		addr += sectorSize
	}
	return flush()
}

// ReadMBR reads syslinux's GPT MBR code (gptmbr.bin, 440 bytes).
func ReadMBR(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(b) != MBRCodeLen {
		return nil, fmt.Errorf("%s: %d bytes, want the %d bytes of an MBR's boot code", path, len(b), MBRCodeLen)
	}
	return b, nil
}
