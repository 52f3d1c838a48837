package earlyboot

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"kpaas.dev/appliance/internal/diskplan"
	"kpaas.dev/appliance/internal/names"
)

func TestChooseTarget(t *testing.T) {
	const gib = int64(1) << 30
	plan := &diskplan.Plan{DiskSize: 2 * gib, DiskGUID: "6a1c3b9e-0000-4000-8000-000000000001"}
	sr0 := Device{Name: "sr0", Size: gib, FS: FS{Type: "iso9660", Label: names.ISOLabel}}
	iso := Found{ISO: &sr0}
	blank := func(name string, size int64) Device { return Device{Name: name, Size: size} }
	none := func(Device) DiskInfo { return DiskInfo{} }
	tables := func(m map[string]DiskInfo) func(Device) DiskInfo {
		return func(d Device) DiskInfo { return m[d.Name] }
	}
	cases := []struct {
		name    string
		devs    []Device
		found   Found
		want    string
		info    func(Device) DiskInfo
		disk    string
		already bool
		held    string
		err     string
	}{
		{name: "the only empty disk", devs: []Device{sr0, blank("vda", 4*gib)}, found: iso, want: InstallAuto, info: none, disk: "vda"},
		{name: "a small disk and a used one are passed over",
			devs:  []Device{sr0, blank("vda", gib), blank("vdb", 4*gib), {Name: "vdb1", Disk: "vdb", PartN: 1}, blank("vdc", 4*gib), {Name: "vdd", Size: 4 * gib, FS: FS{Type: "ext4"}}, blank("vde", 8*gib)},
			found: iso, want: InstallAuto, info: tables(map[string]DiskInfo{"vdc": {Table: "mbr"}}), disk: "vde"},
		{name: "two empty disks", devs: []Device{sr0, blank("vda", 4*gib), blank("vdb", 4*gib)}, found: iso, want: InstallAuto, info: none,
			err: "kpaas.install=auto: 2 empty disks (/dev/vda, /dev/vdb): name one"},
		{name: "none", devs: []Device{sr0, blank("vda", gib), {Name: "vdb", Size: 4 * gib, ReadOnly: true}}, found: iso, want: InstallAuto, info: none,
			err: "no empty disk of at least 2.0 GiB (/dev/sr0: the installer's own medium; /dev/vda: 1.0 GiB, the image needs 2.0 GiB; /dev/vdb: read-only)"},
		{name: "installed already, booted from the ISO again",
			devs:  []Device{sr0, blank("vda", 4*gib), {Name: "vda1", Disk: "vda", PartN: 1, PartName: names.PartRootA}, blank("vdb", 4*gib)},
			found: iso, want: InstallAuto, info: tables(map[string]DiskInfo{"vda": {Table: "gpt", GUID: strings.ToUpper(plan.DiskGUID)}}), disk: "vda", already: true},
		{name: "named, with data", devs: []Device{sr0, blank("vda", 4*gib), {Name: "vda1", Disk: "vda", PartN: 1}}, found: iso, want: "/dev/vda", info: none,
			disk: "vda", held: "holds 1 partitions"},
		{name: "named, missing", devs: []Device{sr0, blank("vda", 4*gib)}, found: iso, want: "/dev/sdz", info: none,
			err: "kpaas.install=/dev/sdz: no such disk (disks: /dev/sr0, /dev/vda)"},
		{name: "named, the USB stick itself",
			devs:  []Device{{Name: "sda", Size: 4 * gib, FS: FS{Type: "iso9660", Label: names.ISOLabel}}, {Name: "sda1", Disk: "sda", PartN: 1, FS: FS{Type: "iso9660", Label: names.ISOLabel}}, blank("vda", 4*gib)},
			found: Found{ISO: &Device{Name: "sda1", Disk: "sda", PartN: 1}}, want: "/dev/sda", info: none,
			err: "kpaas.install=/dev/sda: the installer's own medium"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ch, err := ChooseTarget(c.devs, c.found, plan, c.want, c.info)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ch.Disk.Name != c.disk || ch.Installed != c.already || ch.Held != c.held {
				t.Errorf("chose %+v, want %s installed=%v held=%q", ch, c.disk, c.already, c.held)
			}
		})
	}
}

// InspectDisk reads what sfdisk wrote: the GPT and its disk GUID.
func TestInspectDisk(t *testing.T) {
	img := gptImage(t)
	out, err := exec.Command("sfdisk", "--disk-id", img).Output()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := InspectDisk(f)
	if got.Table != "gpt" || !strings.EqualFold(got.GUID, strings.TrimSpace(string(out))) {
		t.Errorf("InspectDisk = %+v, sfdisk --disk-id says %s", got, out)
	}
	blank, _ := os.CreateTemp(t.TempDir(), "blank")
	blank.Truncate(1 << 20)
	if got := InspectDisk(blank); got != (DiskInfo{}) {
		t.Errorf("blank disk: %+v", got)
	}
	blank.Close()
}

func TestParseCmdlineInstall(t *testing.T) {
	for in, want := range map[string]string{"kpaas.install": InstallAuto, "kpaas.install=auto": InstallAuto, "kpaas.install=/dev/sda": "/dev/sda", "quiet": ""} {
		c, err := ParseCmdline(in)
		if err != nil || c.Install != want {
			t.Errorf("%q: Install=%q err=%v, want %q", in, c.Install, err, want)
		}
	}
	if _, err := ParseCmdline("kpaas.install=sda"); err == nil || !strings.Contains(err.Error(), "want auto or a disk") {
		t.Errorf("kpaas.install=sda: %v", err)
	}
}
