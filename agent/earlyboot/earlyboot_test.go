package earlyboot

import (
	"bytes"
	"encoding/binary"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kpaas.dev/appliance/internal/names"
	"kpaas.dev/appliance/internal/testenv"
)

// fakeSys builds a /sys/class/block tree like the kernel's: partition
// folders inside their disk's folder, symlinked from class/block.
func fakeSys(t *testing.T, devs map[string]string) string {
	t.Helper()
	root := t.TempDir()
	class := filepath.Join(root, "class", "block")
	os.MkdirAll(class, 0o755)
	for name, uevent := range devs {
		dir := filepath.Join(root, "devices", "virtio", name)
		os.MkdirAll(dir, 0o755)
		os.WriteFile(filepath.Join(dir, "uevent"), []byte(uevent), 0o644)
		os.WriteFile(filepath.Join(dir, "size"), []byte("2048\n"), 0o644)
		if err := os.Symlink(dir, filepath.Join(class, filepath.Base(name))); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestScan(t *testing.T) {
	sys := fakeSys(t, map[string]string{
		"vda":      "DEVNAME=vda\nDEVTYPE=disk\n",
		"vda/vda1": "DEVNAME=vda1\nDEVTYPE=partition\nPARTN=1\nPARTNAME=KPAAS-ROOT-A\n",
		"vda/vda2": "DEVNAME=vda2\nDEVTYPE=partition\nPARTN=2\nPARTNAME=KPAAS-BUNDLE\n",
		"vda/vda3": "DEVNAME=vda3\nDEVTYPE=partition\nPARTN=3\n",
		"loop0":    "DEVNAME=loop0\nDEVTYPE=disk\n",
		"sr0":      "DEVNAME=sr0\nDEVTYPE=disk\n",
	})
	devs, err := Scan(sys)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range devs {
		got = append(got, d.Name+":"+d.Disk+":"+d.PartName)
	}
	if want := "sr0::,vda::,vda1:vda:KPAAS-ROOT-A,vda2:vda:KPAAS-BUNDLE,vda3:vda:"; strings.Join(got, ",") != want {
		t.Errorf("Scan = %v, want %s", got, want)
	}
	if devs[1].Size != 1<<20 {
		t.Errorf("size = %d", devs[1].Size)
	}
}

// gptImage makes a GPT image with sfdisk, the independent tool.
func gptImage(t *testing.T) string {
	t.Helper()
	testenv.RequireTool(t, "sfdisk")
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Truncate(img, 64<<20)
	script := "label: gpt\n" +
		"size=16MiB, name=KPAAS-ROOT-A\n" +
		"size=16MiB, name=KPAAS-BUNDLE\n" +
		"name=KPAAS-STATE\n"
	cmd := exec.Command("sfdisk", "-q", img)
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	return img
}

func TestReadGPT(t *testing.T) {
	f, err := os.Open(gptImage(t))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	parts, err := ReadGPT(f)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range parts {
		got = append(got, p.Name)
	}
	if strings.Join(got, ",") != "KPAAS-ROOT-A,KPAAS-BUNDLE,KPAAS-STATE" || parts[2].Number != 3 || parts[0].FirstLBA != 2048 {
		t.Errorf("partitions %+v", parts)
	}
	if _, err := ReadGPT(bytes.NewReader(make([]byte, 8192))); err == nil {
		t.Error("a blank disk has a GPT")
	}
}

func TestFillPartNames(t *testing.T) {
	img := gptImage(t)
	devs := []Device{{Name: "vda"}, {Name: "vda2", Disk: "vda", PartN: 2}, {Name: "vda3", Disk: "vda", PartN: 3, PartName: "kept"}}
	FillPartNames(devs, func(disk string) (io.ReaderAt, func(), error) {
		f, err := os.Open(img)
		return f, func() { f.Close() }, err
	})
	if devs[1].PartName != "KPAAS-BUNDLE" || devs[2].PartName != "kept" {
		t.Errorf("%+v", devs)
	}
}

func TestProbe(t *testing.T) {
	ext4 := make([]byte, 4096)
	binary.LittleEndian.PutUint16(ext4[1024+56:], 0xef53)
	copy(ext4[1024+120:], "KPAAS-STATE")
	iso := make([]byte, 40000)
	copy(iso[32769:], "CD001")
	copy(iso[32808:], "KPAAS                           ")
	isoNUL := make([]byte, 40000) // go-diskfs pads the volume id with NULs
	copy(isoNUL[32769:], "CD001")
	copy(isoNUL[32808:], "KPAAS")
	fat := make([]byte, 512)
	fat[510], fat[511] = 0x55, 0xaa
	copy(fat[82:], "FAT32   ")
	copy(fat[71:], "KPAAS-CONFIG"[:11])
	for _, tc := range []struct {
		data []byte
		want FS
	}{
		{[]byte("hsqs\x00\x00"), FS{Type: "squashfs"}},
		{ext4, FS{Type: "ext4", Label: "KPAAS-STATE"}},
		{iso, FS{Type: "iso9660", Label: "KPAAS"}},
		{isoNUL, FS{Type: "iso9660", Label: "KPAAS"}},
		{fat, FS{Type: "vfat", Label: "KPAAS-CONFI"}},
		{make([]byte, 8192), FS{}},
		{nil, FS{}},
	} {
		if got := Probe(bytes.NewReader(tc.data)); got != tc.want {
			t.Errorf("Probe = %+v, want %+v", got, tc.want)
		}
	}
}

func TestProbeRealExt4(t *testing.T) {
	testenv.RequireTool(t, "mkfs.ext4")
	img := filepath.Join(t.TempDir(), "e4.img")
	os.WriteFile(img, nil, 0o644)
	os.Truncate(img, 8<<20)
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-L", "KPAAS-STATE", img).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	f, _ := os.Open(img)
	defer f.Close()
	if got := Probe(f); got != (FS{Type: "ext4", Label: "KPAAS-STATE"}) {
		t.Errorf("Probe = %+v", got)
	}
}

func TestParseCmdline(t *testing.T) {
	c, err := ParseCmdline("console=ttyS0 quiet kpaas.root=KPAAS-ROOT-B kpaas.live kpaas.wait=5 kpaas.modules=e1000,,nvme kpaas.debug init=/lib/systemd/systemd\n")
	if err != nil {
		t.Fatal(err)
	}
	if c.Root != names.PartRootB || !c.Live || c.Wait != 5*time.Second || strings.Join(c.Modules, ",") != "e1000,nvme" || !c.Debug || c.Init != "/lib/systemd/systemd" {
		t.Errorf("%+v", c)
	}
	c, _ = ParseCmdline("quiet")
	if c.Root != names.PartRootA || c.Wait != 30*time.Second || c.Init != "/sbin/init" || c.Live {
		t.Errorf("defaults %+v", c)
	}
	if _, err := ParseCmdline("kpaas.wait=soon"); err == nil {
		t.Error("kpaas.wait=soon accepted")
	}
}

func render(steps []Step) string {
	var b strings.Builder
	for _, s := range steps {
		b.WriteString(s.String() + "\n")
	}
	return b.String()
}

var disk = []Device{
	{Name: "vda"},
	{Name: "vda1", Disk: "vda", PartN: 1, PartName: "KPAAS-ROOT-A", FS: FS{Type: "squashfs"}},
	{Name: "vda2", Disk: "vda", PartN: 2, PartName: "KPAAS-BUNDLE", FS: FS{Type: "squashfs"}},
	{Name: "vda3", Disk: "vda", PartN: 3, PartName: "KPAAS-STATE"},
	{Name: "vdb", FS: FS{Type: "vfat", Label: "KPAAS-CONFIG"}},
}

func TestPlanDiskFirstBoot(t *testing.T) {
	cfg, _ := ParseCmdline("")
	steps, err := Plan(Find(disk, cfg), cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := `mkdir /kpaas/ro
mkdir /kpaas/state
mkdir /sysroot
mount /dev/vda1 /kpaas/ro squashfs ro
grow /dev/vda /dev/vda3 3
format /dev/vda3 /kpaas/ro KPAAS-STATE
mount /dev/vda3 /kpaas/state ext4
mkdir /kpaas/state/root/upper
mkdir /kpaas/state/root/work
mount overlay /sysroot overlay lowerdir=/kpaas/ro,upperdir=/kpaas/state/root/upper,workdir=/kpaas/state/root/work
seedvar /kpaas/ro/var /kpaas/state/var
bind /kpaas/state/var /sysroot/var
mount tmpfs /sysroot/run tmpfs mode=0755,nosuid,nodev
mkdir /sysroot/run/kpaas/bundle
mkdir /sysroot/run/kpaas/ro
mkdir /sysroot/run/kpaas/state
mount /dev/vda2 /sysroot/run/kpaas/bundle squashfs ro
mkdir /sysroot/run/kpaas/config
mount /dev/vdb /sysroot/run/kpaas/config vfat iocharset=utf8,uid=0,gid=0,fmask=0177,dmask=0077 ro
move /kpaas/ro /sysroot/run/kpaas/ro
move /kpaas/state /sysroot/run/kpaas/state
`
	if got := render(steps); got != want {
		t.Errorf("plan:\n%s\nwant:\n%s", got, want)
	}
}

func TestPlanDiskLaterBootAndLive(t *testing.T) {
	devs := append([]Device(nil), disk...)
	devs[3].FS = FS{Type: "ext4", Label: "KPAAS-STATE"}
	cfg, _ := ParseCmdline("")
	steps, _ := Plan(Find(devs, cfg), cfg)
	if got := render(steps); strings.Contains(got, "format") || strings.Contains(got, "grow") || !strings.Contains(got, "mount /dev/vda3 /kpaas/state ext4") {
		t.Errorf("second boot plan:\n%s", got)
	}
	devs[3].FS = FS{Type: "vfat"}
	if _, err := Plan(Find(devs, cfg), cfg); err == nil || !strings.Contains(err.Error(), "refusing") {
		t.Errorf("a foreign state file system: %v", err)
	}
	cfg.Live = true
	steps, _ = Plan(Find(devs, cfg), cfg)
	if got := render(steps); !strings.Contains(got, "mount tmpfs /kpaas/state tmpfs") || strings.Contains(got, "/dev/vda3") || strings.Contains(got, "grow") || strings.Contains(got, "seedvar") {
		t.Errorf("live plan:\n%s", got)
	}
}

func TestPlanISO(t *testing.T) {
	devs := []Device{{Name: "sr0", FS: FS{Type: "iso9660", Label: "KPAAS"}}, {Name: "vda"}}
	cfg, _ := ParseCmdline("")
	steps, err := Plan(Find(devs, cfg), cfg)
	if err != nil {
		t.Fatal(err)
	}
	got := render(steps)
	for _, want := range []string{
		"mount /dev/sr0 /kpaas/media iso9660 ro\nloop /kpaas/media/kpaas/root.squashfs /kpaas/ro squashfs ro\n",
		"mount tmpfs /kpaas/state tmpfs mode=0755,size=50%\n",
		"loop /kpaas/media/kpaas/bundle.squashfs /sysroot/run/kpaas/bundle squashfs ro\n",
		"move /kpaas/media /sysroot/run/kpaas/media\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("ISO plan lacks %q:\n%s", want, got)
		}
	}
}

// The media's ESP is mounted and, without a config disk, its
// kpaas/cluster.yaml (from `kpaas image build --config`) is the config.
func TestPlanESP(t *testing.T) {
	cfg, _ := ParseCmdline("")
	media := append([]Device{{Name: "vda1", Disk: "vda", PartN: 1, PartName: "EFI", FS: FS{Type: "vfat", Label: "EFI"}},
		{Name: "vdb1", Disk: "vdb", PartN: 1, PartName: "EFI", FS: FS{Type: "vfat"}}}, disk[:4]...)
	for _, tc := range []struct {
		name      string
		devs      []Device
		want, not []string
	}{
		{"disk", media, []string{
			"mount /dev/vda1 /sysroot/run/kpaas/esp vfat iocharset=utf8 ro\nbind /sysroot/run/kpaas/esp/kpaas/cluster.yaml /sysroot/run/kpaas/config/cluster.yaml if-exists\n",
		}, []string{"vdb1"}},
		{"disk and config disk", append(media, disk[4]), []string{
			"mount /dev/vda1 /sysroot/run/kpaas/esp vfat iocharset=utf8 ro\nmkdir /sysroot/run/kpaas/config\nmount /dev/vdb /sysroot/run/kpaas/config vfat iocharset=utf8,uid=0,gid=0,fmask=0177,dmask=0077 ro\n",
		}, []string{"cluster.yaml"}},
		{"another disk's ESP only", append(media[1:2:2], disk[:4]...), nil, []string{"esp", "cluster.yaml"}},
		{"ISO", []Device{{Name: "sr0", FS: FS{Type: "iso9660", Label: "KPAAS"}}}, []string{
			"loop /kpaas/media/boot/efiboot.img /sysroot/run/kpaas/esp vfat iocharset=utf8 ro if-exists\nbind /sysroot/run/kpaas/esp/kpaas/cluster.yaml /sysroot/run/kpaas/config/cluster.yaml if-exists\n",
		}, nil},
	} {
		steps, err := Plan(Find(tc.devs, cfg), cfg)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		got := render(steps)
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: plan lacks %q:\n%s", tc.name, w, got)
			}
		}
		for _, n := range tc.not {
			if strings.Contains(got, n) {
				t.Errorf("%s: plan has %q:\n%s", tc.name, n, got)
			}
		}
	}
}

func TestPlanMissing(t *testing.T) {
	cfg, _ := ParseCmdline("")
	for _, tc := range []struct {
		devs []Device
		want string
	}{
		{nil, "no partition named KPAAS-ROOT-A and no ISO labelled KPAAS"},
		{disk[:2], "no KPAAS-BUNDLE partition"},
		{[]Device{disk[1], {Name: "vda2", PartName: "KPAAS-BUNDLE"}}, "holds no file system"},
	} {
		_, err := Plan(Find(tc.devs, cfg), cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("err = %v, want %q", err, tc.want)
		}
	}
}
