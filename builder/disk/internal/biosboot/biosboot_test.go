package biosboot

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"os"
	"testing"
)

const installer = "/usr/bin/syslinux" // Debian package syslinux

func readCore(t *testing.T) *Core {
	t.Helper()
	if _, err := os.Stat(installer); err != nil {
		t.Skipf("%s not installed (Debian package syslinux): %v", installer, err)
	}
	c, err := ReadInstaller(installer)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestReadInstaller(t *testing.T) {
	c := readCore(t)
	le := binary.LittleEndian
	if len(c.BootSector) != 512 || c.BootSector[0] != 0xeb || le.Uint32(c.BootSector[bsMagicOff:]) != ldlinuxMagic {
		t.Errorf("boot sector % x…", c.BootSector[:16])
	}
	if len(c.LDLinuxSys)%512 != 0 || !bytes.Contains(c.LDLinuxSys[:64], []byte("SYSLINUX")) || patchArea(c.LDLinuxSys[:512]) < 0 {
		t.Errorf("ldlinux.sys: %d bytes, starts %q", len(c.LDLinuxSys), c.LDLinuxSys[:32])
	}
	f, err := elf.NewFile(bytes.NewReader(c.LDLinuxC32))
	if err != nil || f.Class != elf.ELFCLASS32 || f.Machine != elf.EM_386 || f.Section(".dynsym") == nil {
		t.Errorf("ldlinux.c32 is not an i386 ELF module: %v", err)
	}
	t.Logf("boot sector 512 B, ldlinux.sys %d B, ldlinux.c32 %d B", len(c.LDLinuxSys), len(c.LDLinuxC32))
	if _, err := ReadInstaller("/bin/sh"); err == nil {
		t.Error("ReadInstaller(/bin/sh): no error")
	}
}

// TestInstall patches for a fragmented ldlinux.sys and reads every field
// back: the sector list rebuilt from the boot sector and the extents, the
// ADV pointers, the folder, the totals and syslinux's checksum.
func TestInstall(t *testing.T) {
	c := readCore(t)
	le := binary.LittleEndian
	n := c.Sectors()
	// three pieces, the second starting across a 64 KiB load boundary
	var sectors []uint64
	for i := 0; i < n; i++ {
		switch {
		case i < 10:
			sectors = append(sectors, 1000+uint64(i))
		case i < n-2:
			sectors = append(sectors, 5000+uint64(i))
		default:
			sectors = append(sectors, 90000+uint64(i))
		}
	}
	fsBoot := make([]byte, 512)
	for i := range fsBoot {
		fsBoot[i] = byte(i)
	}
	boot, sys, err := c.Install(fsBoot, 2048, sectors, "/syslinux/")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(boot[11:28], fsBoot[11:28]) || !bytes.Equal(boot[32:90], fsBoot[32:90]) {
		t.Error("BPB changed")
	}
	if le.Uint32(boot[28:]) != 2048 || !bytes.Equal(boot[:3], c.BootSector[:3]) || boot[510] != fsBoot[510] {
		t.Errorf("boot sector head % x, hidden %d", boot[:12], le.Uint32(boot[28:]))
	}
	pa := patchArea(sys)
	epa := int(le.Uint16(sys[pa+22:]))
	field := func(off int) int { return int(le.Uint16(sys[epa+off:])) }
	got := []uint64{uint64(le.Uint32(boot[field(14):])) | uint64(le.Uint32(boot[field(16):]))<<32}
	ext := field(10)
	for i := 0; i < field(12); i++ {
		e := sys[ext+10*i:]
		lba, l := le.Uint64(e), le.Uint16(e[8:])
		if l == 0 {
			break
		}
		if int(l)*512 >= 65536 {
			t.Errorf("extent %d: %d sectors", i, l)
		}
		for k := uint64(0); k < uint64(l); k++ {
			got = append(got, lba+k)
		}
	}
	adv := field(0)
	got = append(got, le.Uint64(sys[adv:]), le.Uint64(sys[adv+8:]))
	if len(got) != n {
		t.Fatalf("sector list of %d sectors, want %d", len(got), n)
	}
	for i := range got {
		if got[i] != sectors[i] {
			t.Fatalf("sector %d read back as %d, want %d", i, got[i], sectors[i])
		}
	}
	if d := sys[field(2):]; string(d[:bytes.IndexByte(d, 0)]) != "/syslinux/" {
		t.Errorf("folder %q", d[:16])
	}
	if ds, as, dw := le.Uint16(sys[pa+8:]), le.Uint16(sys[pa+10:]), le.Uint32(sys[pa+12:]); int(ds) != n-2 || as != 2 || int(dw) != len(sys)/4 {
		t.Errorf("totals: %d data sectors, %d ADV sectors, %d dwords", ds, as, dw)
	}
	var sum uint32
	for i := 0; i < len(sys); i += 4 {
		sum += le.Uint32(sys[i:])
	}
	if sum != ldlinuxMagic {
		t.Errorf("checksum: dwords add up to %#x, want %#x", sum, ldlinuxMagic)
	}
	if bytes.Equal(c.LDLinuxSys, sys) {
		t.Error("Install changed the core's own copy or nothing")
	}

	if _, _, err := c.Install(fsBoot, 2048, sectors[:n-1], "/syslinux/"); err == nil {
		t.Error("too few sectors: no error")
	}
}

func TestFile(t *testing.T) {
	c := readCore(t)
	f := c.File()
	if len(f) != len(c.LDLinuxSys)+1024 || len(f)/512 != c.Sectors() {
		t.Fatalf("%d bytes", len(f))
	}
	adv := f[len(c.LDLinuxSys):]
	le := binary.LittleEndian
	if le.Uint32(adv) != advMagic1 || le.Uint32(adv[508:]) != advMagic3 || !bytes.Equal(adv[:512], adv[512:]) {
		t.Errorf("ADV % x", adv[:8])
	}
	var sum uint32
	for i := 8; i < 508; i += 4 {
		sum += le.Uint32(adv[i:])
	}
	if sum+le.Uint32(adv[4:]) != advMagic2 {
		t.Error("ADV checksum")
	}
}
