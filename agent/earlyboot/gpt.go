package earlyboot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// minGrow is the least growth (sectors, 1 MiB) GrowGPT bothers with.
const minGrow = 2048

// Disk is a block device or image file GrowGPT may rewrite.
type Disk interface {
	io.ReaderAt
	io.WriterAt
}

// GrowGPT makes partition number partN of a GPT disk of diskSize bytes
// (512-byte sectors) fill the disk: it moves the backup GPT (entries and
// header) to the disk's end, raises the last usable LBA, extends the
// partition's last LBA to it and widens the protective MBR. It refuses a
// partition that is not the last one on the disk, and leaves the disk
// alone when less than 1 MiB is free after the partition; grown says
// whether it wrote. Both headers are checked (CRC32s) before anything is written.
func GrowGPT(d Disk, diskSize int64, partN int) (p Partition, grown bool, err error) {
	const sector = 512
	hdr := make([]byte, sector)
	if _, err := d.ReadAt(hdr, sector); err != nil {
		return p, false, fmt.Errorf("reading GPT header: %w", err)
	}
	if string(hdr[:8]) != "EFI PART" {
		return p, false, errors.New("no GPT header")
	}
	le := binary.LittleEndian
	hsize := le.Uint32(hdr[12:])
	if hsize < 92 || hsize > sector {
		return p, false, fmt.Errorf("implausible GPT header size %d", hsize)
	}
	if crc := le.Uint32(hdr[16:]); crc != headerCRC(hdr[:hsize]) {
		return p, false, errors.New("GPT header checksum mismatch")
	}
	oldAlt := le.Uint64(hdr[32:])
	entriesLBA := le.Uint64(hdr[72:])
	count := le.Uint32(hdr[80:])
	esize := le.Uint32(hdr[84:])
	if count == 0 || count > 1024 || esize < 128 || esize > 4096 {
		return p, false, fmt.Errorf("implausible GPT: %d entries of %d bytes", count, esize)
	}
	table := make([]byte, int(count)*int(esize))
	if _, err := d.ReadAt(table, int64(entriesLBA)*sector); err != nil {
		return p, false, fmt.Errorf("reading GPT entries: %w", err)
	}
	if crc32.ChecksumIEEE(table) != le.Uint32(hdr[88:]) {
		return p, false, errors.New("GPT entries checksum mismatch")
	}
	if partN < 1 || partN > int(count) {
		return p, false, fmt.Errorf("no partition %d in the GPT", partN)
	}
	entry := func(i int) []byte { return table[i*int(esize) : (i+1)*int(esize)] }
	e := entry(partN - 1)
	if bytes.Equal(e[:16], make([]byte, 16)) {
		return p, false, fmt.Errorf("partition %d is empty", partN)
	}
	p = Partition{Number: partN, FirstLBA: le.Uint64(e[32:]), LastLBA: le.Uint64(e[40:])}
	for i := 0; i < int(count); i++ {
		o := entry(i)
		if i == partN-1 || bytes.Equal(o[:16], make([]byte, 16)) {
			continue
		}
		if le.Uint64(o[40:]) >= p.FirstLBA {
			return p, false, fmt.Errorf("partition %d is not the last on the disk (partition %d ends after it starts)", partN, i+1)
		}
	}

	lastLBA := uint64(diskSize/sector) - 1
	if oldAlt > lastLBA {
		return p, false, fmt.Errorf("the GPT's backup header (LBA %d) lies beyond the disk's end (LBA %d)", oldAlt, lastLBA)
	}
	entrySectors := (uint64(len(table)) + sector - 1) / sector
	backupEntries := lastLBA - entrySectors
	lastUsable := backupEntries - 1
	// Less than 1 MiB after it is the alignment slack image writers leave,
	// not an enlarged disk: not worth rewriting the GPT for.
	if lastUsable < p.LastLBA+minGrow {
		return p, false, nil
	}

	le.PutUint64(e[40:], lastUsable)
	p.LastLBA = lastUsable
	entriesCRC := crc32.ChecksumIEEE(table)

	primary := append([]byte(nil), hdr[:hsize]...)
	le.PutUint64(primary[32:], lastLBA) // alternate LBA
	le.PutUint64(primary[48:], lastUsable)
	le.PutUint32(primary[88:], entriesCRC)
	backup := append([]byte(nil), primary...)
	le.PutUint64(backup[24:], lastLBA) // my LBA
	le.PutUint64(backup[32:], 1)
	le.PutUint64(backup[72:], backupEntries)
	le.PutUint32(primary[16:], headerCRC(primary))
	le.PutUint32(backup[16:], headerCRC(backup))

	// The backup first, so a disk cut off half way still has a valid
	// primary GPT (the old one) to boot from.
	writes := []struct {
		b   []byte
		lba uint64
	}{
		{table, backupEntries}, {pad(backup, sector), lastLBA},
		{table, entriesLBA}, {pad(primary, sector), 1},
	}
	for _, w := range writes {
		if _, err := d.WriteAt(w.b, int64(w.lba)*sector); err != nil {
			return p, false, fmt.Errorf("writing the GPT at LBA %d: %w", w.lba, err)
		}
	}
	// The old backup header now lies inside the partition: wipe it, so no
	// tool mistakes it for a GPT.
	if oldAlt > 1 && oldAlt < lastLBA {
		if _, err := d.WriteAt(make([]byte, sector), int64(oldAlt)*sector); err != nil {
			return p, true, fmt.Errorf("wiping the old backup GPT header: %w", err)
		}
	}
	// The protective MBR's 0xEE partition covers the disk (at most 2^32-1 sectors).
	mbr := make([]byte, sector)
	if _, err := d.ReadAt(mbr, 0); err == nil && mbr[510] == 0x55 && mbr[511] == 0xaa {
		for i := 0; i < 4; i++ {
			pe := mbr[446+16*i : 446+16*(i+1)]
			if pe[4] == 0xee && le.Uint32(pe[8:]) == 1 {
				n := lastLBA
				if n > 0xffffffff {
					n = 0xffffffff
				}
				le.PutUint32(pe[12:], uint32(n))
				if _, err := d.WriteAt(mbr, 0); err != nil {
					return p, true, fmt.Errorf("writing the protective MBR: %w", err)
				}
				break
			}
		}
	}
	return p, true, nil
}

// headerCRC is the CRC32 of a GPT header with its CRC field zeroed.
func headerCRC(h []byte) uint32 {
	c := append([]byte(nil), h...)
	binary.LittleEndian.PutUint32(c[16:], 0)
	return crc32.ChecksumIEEE(c)
}

func pad(b []byte, n int) []byte {
	out := make([]byte, n)
	copy(out, b)
	return out
}
