// Package isohybrid makes an El Torito ISO 9660 image bootable as a disk
// too (a USB stick, or a disk image given to a VM), the way syslinux's
// isohybrid does, without running it:
//
//   - the first 432 bytes of the image become MBR boot code, taken from
//     syslinux's isohdpfx.bin (read at build time from the isolinux package);
//   - bytes 432..435 hold the 512-byte sector of isolinux.bin, which that code
//     loads (isolinux.bin recognises the hybrid boot by a signature at 0x40);
//   - bytes 440..443 are the disk signature;
//   - partition 1 (bootable, type 0x17) spans the whole image, for BIOS;
//   - partition 2 (type 0xEF) spans the El Torito EFI image (a FAT file
//     system), so UEFI firmware finds EFI/BOOT/BOOTX64.EFI on the stick;
//   - the image is padded to a whole number of 1 MiB "cylinders"
//     (64 heads × 32 sectors), as isohybrid does.
//
// The boot file and EFI image locations are read from the El Torito boot
// catalog of the image itself.
package isohybrid

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
)

const (
	sector      = 2048
	mbrCodeSize = 432
	heads       = 64
	sectors     = 32
	cylinder    = heads * sectors * 512
	// hybridSignature is at offset 0x40 of a hybrid-capable isolinux.bin.
	hybridSignature = 0x7078c0fb
)

// Options for Apply.
type Options struct {
	// MBRCode is isohdpfx.bin (at least 432 bytes; only those are used).
	MBRCode []byte
	// DiskID is the MBR disk signature.
	DiskID uint32
	// EFIImageSize is the size in bytes of the El Torito EFI image, needed
	// when the catalog cannot say (images over 32 MiB record 0 sectors).
	EFIImageSize int64
}

// Result tells where things ended up.
type Result struct {
	BootLBA    uint32 // isolinux.bin, in 2048-byte sectors
	EFILBA     uint32 // EFI image, in 2048-byte sectors; 0 when there is none
	EFISectors uint32 // EFI image length in 512-byte sectors
	Size       int64  // image size after padding
}

// Apply writes the hybrid MBR into the ISO image f and pads it.
func Apply(f *os.File, opts Options) (Result, error) {
	var res Result
	if len(opts.MBRCode) < mbrCodeSize {
		return res, fmt.Errorf("MBR boot code is %d bytes, want at least %d (isohdpfx.bin)", len(opts.MBRCode), mbrCodeSize)
	}
	le := binary.LittleEndian

	pvd := make([]byte, sector)
	if _, err := f.ReadAt(pvd, 16*sector); err != nil {
		return res, fmt.Errorf("reading primary volume descriptor: %w", err)
	}
	if pvd[0] != 1 || string(pvd[1:6]) != "CD001" {
		return res, errors.New("not an ISO 9660 image (no primary volume descriptor)")
	}
	isoSize := int64(le.Uint32(pvd[80:])) * int64(le.Uint16(pvd[128:]))

	brvd := make([]byte, sector)
	if _, err := f.ReadAt(brvd, 17*sector); err != nil {
		return res, err
	}
	if brvd[0] != 0 || string(brvd[1:6]) != "CD001" || string(brvd[7:30]) != "EL TORITO SPECIFICATION" {
		return res, errors.New("ISO image has no El Torito boot record at sector 17")
	}
	catalog := make([]byte, sector)
	if _, err := f.ReadAt(catalog, int64(le.Uint32(brvd[0x47:]))*sector); err != nil {
		return res, fmt.Errorf("reading boot catalog: %w", err)
	}
	if catalog[0] != 1 || catalog[0x1e] != 0x55 || catalog[0x1f] != 0xaa {
		return res, errors.New("invalid El Torito validation entry")
	}
	if catalog[0] == 1 && catalog[1] != 0 {
		return res, fmt.Errorf("first El Torito entry is for platform %#x, want BIOS (0)", catalog[1])
	}
	if catalog[32] != 0x88 {
		return res, errors.New("default El Torito entry is not bootable")
	}
	res.BootLBA = le.Uint32(catalog[32+8:])
	// section headers (0x90 more follow, 0x91 last) with their entries
	for off := 64; off+32 <= len(catalog); {
		h := catalog[off : off+32]
		if h[0] != 0x90 && h[0] != 0x91 {
			break
		}
		n := int(le.Uint16(h[2:]))
		for i := 0; i < n && off+32*(i+2) <= len(catalog); i++ {
			e := catalog[off+32*(i+1) : off+32*(i+2)]
			if h[1] == 0xef && e[0] == 0x88 && res.EFILBA == 0 {
				res.EFILBA = le.Uint32(e[8:])
				res.EFISectors = uint32(le.Uint16(e[6:]))
			}
		}
		if h[0] == 0x91 {
			break
		}
		off += 32 * (n + 1)
	}
	if res.EFILBA != 0 && opts.EFIImageSize > 0 {
		res.EFISectors = uint32((opts.EFIImageSize + 511) / 512)
	}
	if res.EFILBA != 0 && res.EFISectors == 0 {
		return res, errors.New("size of the El Torito EFI image unknown: set Options.EFIImageSize")
	}

	sig := make([]byte, 4)
	if _, err := f.ReadAt(sig, int64(res.BootLBA)*sector+0x40); err != nil {
		return res, err
	}
	if le.Uint32(sig) != hybridSignature {
		return res, errors.New("the BIOS boot file has no isohybrid signature (is it isolinux.bin from syslinux 4 or later?)")
	}

	// pad to whole cylinders
	fi, err := f.Stat()
	if err != nil {
		return res, err
	}
	size := max(isoSize, fi.Size())
	size = (size + cylinder - 1) / cylinder * cylinder
	if err := f.Truncate(size); err != nil {
		return res, err
	}
	res.Size = size

	mbr := make([]byte, 512)
	copy(mbr, opts.MBRCode[:mbrCodeSize])
	le.PutUint32(mbr[432:], res.BootLBA*4)
	le.PutUint32(mbr[440:], opts.DiskID)

	cyls := size / cylinder
	p := mbr[446:462]
	p[0] = 0x80
	p[1], p[2], p[3] = 0, 1, 0 // CHS of sector 0
	p[4] = 0x17
	endCyl := min(cyls, 1024) - 1
	p[5] = heads - 1
	p[6] = byte(sectors | (endCyl>>8&3)<<6)
	p[7] = byte(endCyl)
	le.PutUint32(p[8:], 0)
	le.PutUint32(p[12:], uint32(size/512))
	if res.EFILBA != 0 {
		p := mbr[462:478]
		p[1], p[2], p[3] = 0xfe, 0xff, 0xff
		p[4] = 0xef
		p[5], p[6], p[7] = 0xfe, 0xff, 0xff
		le.PutUint32(p[8:], res.EFILBA*4)
		le.PutUint32(p[12:], res.EFISectors)
	}
	mbr[510], mbr[511] = 0x55, 0xaa
	if _, err := f.WriteAt(mbr, 0); err != nil {
		return res, err
	}
	return res, nil
}
