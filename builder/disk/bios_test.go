package disk

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"kpaas.dev/appliance/builder/disk/internal/biosboot"
	"kpaas.dev/appliance/builder/disk/internal/fatfix"
)

// TestRawBIOS reads the raw disk's legacy BIOS boot back with tools of
// its own: sfdisk verifies the GPT and reads the ESP's legacy-BIOS-bootable
// attribute; the MBR holds syslinux's gptmbr.bin before an untouched
// protective MBR; fsck.vfat passes the ESP with syslinux's boot sector
// (BPB kept, backup boot sector the same); mtools reads ldlinux.c32 and
// the menu, whose entry is the UEFI loader entry's; and the sectors that
// ldlinux.sys's patched sector list names hold the file mtools reads.
// Syslinux's own installer, run on a copy of the ESP, writes the same
// boot sector and ldlinux.sys.
func TestRawBIOS(t *testing.T) {
	need(t, "sfdisk", "fsck.vfat", "mcopy", "syslinux")
	l := fixture(t)
	out := filepath.Join(t.TempDir(), "disk.raw")
	sum, err := WriteRaw(context.Background(), l, out)
	if err != nil {
		t.Fatal(err)
	}
	if got := sum.Firmware; len(got) != 2 || got[0] != BIOS || got[1] != UEFI {
		t.Errorf("summary firmware %v, want bios and uefi", got)
	}
	if v := run(t, "sfdisk", "--verify", out); !strings.Contains(v, "No errors detected") {
		t.Errorf("sfdisk --verify:\n%s", v)
	}
	var sf struct {
		PartitionTable struct {
			Partitions []struct {
				Name  string `json:"name"`
				Attrs string `json:"attrs"`
			} `json:"partitions"`
		} `json:"partitiontable"`
	}
	if err := json.Unmarshal([]byte(run(t, "sfdisk", "--json", out)), &sf); err != nil {
		t.Fatal(err)
	}
	for i, p := range sf.PartitionTable.Partitions {
		bootable := strings.Contains(p.Attrs, "LegacyBIOSBootable")
		if bootable != (i == 0) {
			t.Errorf("partition %d (%s) attributes %q: only the ESP is LegacyBIOSBootable", i+1, p.Name, p.Attrs)
		}
	}

	img, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	sl := defaultSyslinux
	mbr, _ := os.ReadFile(sl.GPTMBR)
	if !bytes.Equal(img[:440], mbr) {
		t.Error("the MBR's boot code is not syslinux's gptmbr.bin")
	}
	if pe := img[446:462]; pe[0] != 0 || pe[4] != 0xee || binary.LittleEndian.Uint32(pe[8:]) != 1 || img[510] != 0x55 || img[511] != 0xaa {
		t.Errorf("protective MBR entry % x", pe)
	}

	espOff, espSize := sum.Partitions[0].Offset, sum.Partitions[0].Size
	espImg := img[espOff : espOff+espSize]
	core, err := biosboot.ReadInstaller(sl.Installer)
	if err != nil {
		t.Fatal(err)
	}
	bs := espImg[:512]
	if !bytes.Equal(bs[:11], core.BootSector[:11]) || binary.LittleEndian.Uint32(bs[28:]) != uint32(espOff/512) {
		t.Errorf("ESP boot sector head % x, hidden sectors %d", bs[:11], binary.LittleEndian.Uint32(bs[28:]))
	}
	if !bytes.Equal(bs, espImg[6*512:7*512]) {
		t.Error("the FAT32 backup boot sector differs from the boot sector")
	}
	esp := extract(t, out, espOff, espSize)
	run(t, "fsck.vfat", "-n", esp)

	cfg := filepath.Join(t.TempDir(), "syslinux.cfg")
	run(t, "mcopy", "-i", esp, "::/syslinux/syslinux.cfg", cfg)
	if b, _ := os.ReadFile(cfg); !strings.Contains(string(b), "default kpaas\n") ||
		!strings.Contains(string(b), "label kpaas\n  # K-PaaS\n  kernel /kpaas/vmlinuz\n  initrd /kpaas/initrd.img\n  append console=ttyS0\n") {
		t.Errorf("syslinux.cfg:\n%s", b)
	}
	c32 := filepath.Join(t.TempDir(), "ldlinux.c32")
	run(t, "mcopy", "-i", esp, "::/syslinux/ldlinux.c32", c32)
	if b, _ := os.ReadFile(c32); !bytes.Equal(b, core.LDLinuxC32) {
		t.Error("ldlinux.c32 read back differs from the installer's")
	}
	sysPath := filepath.Join(t.TempDir(), "ldlinux.sys")
	run(t, "mcopy", "-i", esp, "::/syslinux/ldlinux.sys", sysPath)
	sys, _ := os.ReadFile(sysPath)
	if len(sys) != core.Sectors()*512 {
		t.Fatalf("ldlinux.sys: %d bytes", len(sys))
	}
	// the sectors the boot sector and the extents name hold the file
	le := binary.LittleEndian
	pa := bytes.Index(sys[:512], le.AppendUint32(nil, 0x3eb202fe))
	epa := int(le.Uint16(sys[pa+22:]))
	field := func(off int) int { return int(le.Uint16(sys[epa+off:])) }
	sectors := []uint64{uint64(le.Uint32(bs[field(14):]))}
	for i := 0; i < field(12); i++ {
		e := sys[field(10)+10*i:]
		for k := uint64(0); k < uint64(le.Uint16(e[8:])); k++ {
			sectors = append(sectors, le.Uint64(e)+k)
		}
	}
	adv := field(0)
	sectors = append(sectors, le.Uint64(sys[adv:]), le.Uint64(sys[adv+8:]))
	if len(sectors) != len(sys)/512 {
		t.Fatalf("the sector list names %d sectors, the file has %d", len(sectors), len(sys)/512)
	}
	for i, s := range sectors {
		if !bytes.Equal(espImg[s*512:(s+1)*512], sys[i*512:(i+1)*512]) {
			t.Fatalf("sector %d of ldlinux.sys is not at ESP sector %d", i, s)
		}
	}

	// syslinux's installer on a copy of the ESP: it puts ldlinux.sys
	// where it likes; patched for those sectors, ours are its bytes
	cp := filepath.Join(t.TempDir(), "esp-syslinux.img")
	writeFile(t, cp, espImg)
	run(t, "syslinux", "--install", "--directory", "/syslinux/", cp)
	f, err := os.Open(cp)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	theirSectors, _, err := fatfix.FileSectors(f, 0, "/syslinux/ldlinux.sys")
	if err != nil {
		t.Fatal(err)
	}
	boot, patched, err := core.Install(bs, uint32(espOff/512), theirSectors, "/syslinux/")
	if err != nil {
		t.Fatal(err)
	}
	theirs, _ := os.ReadFile(cp)
	if !bytes.Equal(theirs[:512], boot) {
		t.Errorf("syslinux's boot sector differs from ours for its sectors:\n% x\n% x", theirs[:512], boot)
	}
	run(t, "mcopy", "-o", "-i", cp, "::/syslinux/ldlinux.sys", sysPath)
	if b, _ := os.ReadFile(sysPath); !bytes.Equal(b[:len(patched)], patched) || !bytes.Equal(b[len(patched):], sys[len(patched):]) {
		t.Error("syslinux's ldlinux.sys differs from ours for its sectors")
	}
}

func TestBIOSMenu(t *testing.T) {
	esp := map[string]Source{
		LoaderConf:                           FromBytes([]byte("default kpaas-install.conf\ntimeout 3\n")),
		"/loader/entries/kpaas.conf":         FromBytes([]byte("title   K-PaaS (live)\nlinux   /kpaas/vmlinuz\ninitrd  /kpaas/initrd.img\noptions console=ttyS0\n")),
		"/loader/entries/kpaas-install.conf": FromBytes([]byte("# install\ntitle\tK-PaaS (install)\nlinux\t/kpaas/vmlinuz\ninitrd /a.img\ninitrd /b.img\noptions console=ttyS0\noptions kpaas.install=auto\n")),
		"/loader/entries/notes.txt":          FromBytes([]byte("not an entry")),
	}
	got, err := BIOSMenu(esp, "ignored")
	if err != nil {
		t.Fatal(err)
	}
	want := `# The ESP's loader entries (/loader/entries) for syslinux: one menu, two loaders.
default kpaas-install
prompt 1
timeout 30
say kpaas-install: K-PaaS (install)
say kpaas: K-PaaS (live)

label kpaas-install
  # K-PaaS (install)
  kernel /kpaas/vmlinuz
  initrd /a.img,/b.img
  append console=ttyS0 kpaas.install=auto

label kpaas
  # K-PaaS (live)
  kernel /kpaas/vmlinuz
  initrd /kpaas/initrd.img
  append console=ttyS0
`
	if got != want {
		t.Errorf("menu:\n%s\nwant:\n%s", got, want)
	}
	got, err = BIOSMenu(nil, "console=ttyS0 quiet")
	if err != nil || !strings.Contains(got, "label kpaas\n  kernel /kpaas/vmlinuz\n  initrd /kpaas/initrd.img\n  append console=ttyS0 quiet\n") {
		t.Errorf("menu without loader entries (%v):\n%s", err, got)
	}
	if _, err := BIOSMenu(map[string]Source{"/loader/entries/x.conf": FromBytes([]byte("title x\n"))}, ""); err == nil {
		t.Error("an entry without linux: no error")
	}
}

// TestFileSectors reads files back through fatfix.FileSectors, on FAT32
// and on FAT16 (whose root is a fixed region), and its errors.
func TestFileSectors(t *testing.T) {
	big := randomBytes(7, 100<<10+123)
	files := map[string]Source{
		"/syslinux/ldlinux.sys": FromBytes(big),
		"/small.txt":            FromBytes([]byte("small")),
		"/a/b/c.bin":            FromBytes(randomBytes(8, 5000)),
	}
	for _, kind := range []fatKind{fat32Kind, fat16Kind} {
		f, err := os.Create(filepath.Join(t.TempDir(), "fat.img"))
		if err != nil {
			t.Fatal(err)
		}
		const start, size = 4096, 40 << 20
		if err := f.Truncate(start + size); err != nil {
			t.Fatal(err)
		}
		if err := writeFAT(f, start, size, kind, "T", files, fixedTime, 1, nil); err != nil {
			t.Fatal(err)
		}
		for p, src := range files {
			sectors, n, err := fatfix.FileSectors(f, start, strings.ToUpper(p))
			if err != nil {
				t.Fatalf("kind %d: %v", kind, err)
			}
			var got []byte
			for _, s := range sectors {
				b := make([]byte, 512)
				f.ReadAt(b, start+int64(s)*512)
				got = append(got, b...)
			}
			if int(n) != len(src.data) || !bytes.Equal(got[:n], src.data) {
				t.Errorf("kind %d, %s: %d bytes read back through %d sectors differ", kind, p, n, len(sectors))
			}
		}
		for _, bad := range []string{"/missing.sys", "/syslinux", "/small.txt/x", "/longer-than-8.sys"} {
			if _, _, err := fatfix.FileSectors(f, start, bad); err == nil {
				t.Errorf("kind %d, %s: no error", kind, bad)
			}
		}
		f.Close()
	}
}
