//go:build qemu

package qemutests

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"kpaas.dev/appliance/builder/bake"
	"kpaas.dev/appliance/builder/disk"
	"kpaas.dev/appliance/builder/image"
	"kpaas.dev/appliance/internal/bundle"
	"kpaas.dev/appliance/internal/progress"
	"kpaas.dev/appliance/qemu-tests/vm"
)

// The bundle the media tests bake: the OS image and one small image.
const (
	mediaBundle  = "qemu-media"
	mediaVersion = "0.0.1"
	appImage     = "docker.io/kpaas/qemu-app:0.0.1"
	// agentConfig is the agent's line about the config image.Build put
	// on the ESP (kpaas-init binds it at /run/kpaas/config).
	agentConfig = `kpaas-agent .*: config disk at /run/kpaas/config \(1 files\)`
	// agentReady is the agent's line once it has opened the bundle.
	agentReady = `kpaas-agent .*: bundle ` + mediaBundle + ` 0\.0\.1 \(2 artifacts\) ready`
	// bootTimeout bounds one boot; they take 20–60 s on two idle cores.
	bootTimeout = 5 * time.Minute
)

// media are the outputs of `kpaas image build --format raw,qcow2,iso`,
// written once for all the media tests into a folder TestMain removes.
var media struct {
	sync.Mutex
	built           bool
	raw, qcow2, iso string
	bundle, config  string // the baked bundle and the cluster config on the media
}

var mediaDir string

func TestMain(m *testing.M) {
	code := m.Run()
	for _, dir := range []string{mediaDir, clusterOnce.dir} {
		if dir == "" {
			continue
		}
		if code != 0 && vm.Keep() {
			fmt.Fprintf(os.Stderr, "%s: kept the media in %s; remove them with: rm -rf %s\n", vm.KeepEnv, dir, dir)
		} else {
			os.RemoveAll(dir)
		}
	}
	os.Exit(code)
}

// buildMedia bakes a bundle whose os.image is the OS image (the `kpaas os
// build` output is the bake's mirror) and writes raw, qcow2 and ISO media
// from it, as `kpaas bake` and `kpaas image build` do.
func buildMedia(t *testing.T) {
	t.Helper()
	media.Lock()
	defer media.Unlock()
	if media.built {
		return
	}
	layoutDir := osImage(t)
	osRef := osImageRef(t, layoutDir)
	dir, err := os.MkdirTemp("", "kpaas-qemu-media-")
	if err != nil {
		t.Fatal(err)
	}
	mediaDir = dir

	mirror := filepath.Join(dir, "mirror")
	appMirror(t, mirror)
	manifest := filepath.Join(dir, "bundle.yaml")
	if err := os.WriteFile(manifest, []byte(fmt.Sprintf(`apiVersion: kpaas.dev/v1alpha1
kind: Bundle
metadata:
  name: %s
  version: %s
kubernetes:
  version: v1.35.4
platforms:
  - linux/amd64
os:
  image: %s
images:
  - %s
`, mediaBundle, mediaVersion, osRef, appImage)), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	log := progress.New(testWriter{t})
	start := time.Now()
	bdir := filepath.Join(dir, "bundle")
	if _, err := bake.Bake(ctx, bake.Options{Manifest: manifest, Out: bdir, Mirrors: []string{layoutDir, mirror},
		Offline: true, Progress: log}); err != nil {
		t.Fatalf("bake: %v", err)
	}
	t.Logf("bundle baked in %s", time.Since(start).Round(100*time.Millisecond))

	config := filepath.Join(dir, "cluster.yaml")
	if err := os.WriteFile(config, []byte("apiVersion: kpaas.dev/v1alpha1\nkind: Cluster\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	sum, err := image.Build(ctx, image.Options{Bundle: bdir, Out: filepath.Join(dir, "node"), Config: config,
		Formats: []disk.Format{disk.Raw, disk.QCOW2, disk.ISO}, Progress: log})
	if err != nil {
		t.Fatalf("image build: %v", err)
	}
	for _, o := range sum.Outputs {
		t.Logf("%s: %d MiB (%d MiB allocated) in %s", o.Path, o.Size>>20, o.Allocated>>20, o.Duration.Round(100*time.Millisecond))
		switch o.Format {
		case disk.Raw:
			media.raw = o.Path
		case disk.QCOW2:
			media.qcow2 = o.Path
		case disk.ISO:
			media.iso = o.Path
		}
	}
	t.Logf("media written in %s; disk command line: %s", time.Since(start).Round(100*time.Millisecond), sum.Cmdline)
	media.bundle, media.config = bdir, config
	media.built = true
}

// osImageRef is the reference of the os entry of a `kpaas os build` layout.
func osImageRef(t *testing.T, layoutDir string) string {
	t.Helper()
	s, err := bundle.Open(layoutDir)
	if err != nil {
		t.Fatal(err)
	}
	es, err := s.Entries()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if e.Kind == bundle.KindOS && e.Ref != "" {
			return e.Ref
		}
	}
	t.Fatalf("%s holds no OS image", layoutDir)
	return ""
}

// appMirror writes a mirror layout holding one small linux/amd64 image.
func appMirror(t *testing.T, dir string) {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, static.NewLayer([]byte("qemu media test layer\n"), types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	img = mutate.MediaType(mutate.ConfigMediaType(img, types.OCIConfigJSON), types.OCIManifestSchema1)
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": appImage}),
		layout.WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"})); err != nil {
		t.Fatal(err)
	}
}

// bootMedia boots one medium and waits for the agent (its config line,
// then its ready line); it logs the times of the hand-offs it sees and
// returns the agent's.
func bootMedia(t *testing.T, marks []string, opts ...vm.Option) time.Duration {
	t.Helper()
	v := vm.Start(t, opts...)
	var seen []string
	for _, m := range marks {
		_, at := v.Expect(m, bootTimeout)
		seen = append(seen, fmt.Sprintf("%q %.1fs", m, at.Seconds()))
	}
	v.Expect(agentConfig, bootTimeout)
	line, at := v.Expect(agentReady, bootTimeout)
	t.Logf("%v", seen)
	t.Logf("agent ready after %.1fs: %s", at.Seconds(), line)
	return at
}

// Hand-offs on the console before kpaas-init, per firmware and medium.
var (
	ovmfMarks     = []string{`BdsDxe: starting`}
	seabiosDisk   = []string{`Booting from Hard Disk`, `SYSLINUX 6`} // gptmbr.bin → syslinux on the ESP
	seabiosISO    = []string{`ISOLINUX`}
	grownAndMade  = []string{`kpaas-init: grew KPAAS-STATE \(/dev/vda5\) to 1\.\d GiB`, `kpaas-init: formatting /dev/vda5 as ext4 \(KPAAS-STATE\)`}
	formattedOnly = []string{`kpaas-init: formatting /dev/vda5 as ext4 \(KPAAS-STATE\)`}
)

// mediaBoots is the media tests' table: each medium of `kpaas image
// build` under each firmware it is made for, booted to the agent's ready
// line. The raw disk is a copy enlarged by 1 GiB, as when written to a
// bigger disk (kpaas-init grows KPAAS-STATE to the disk's end).
var mediaBoots = []struct {
	name     string
	firmware vm.Firmware
	medium   func(t *testing.T) vm.Option
	marks    []string // after the firmware's hand-offs and kpaas-init's start
}{
	{"RawUEFI", vm.OVMF, biggerRaw, grownAndMade},
	{"RawBIOS", vm.SeaBIOS, biggerRaw, grownAndMade},
	{"QCOW2UEFI", vm.OVMF, qcow2Disk, formattedOnly},
	{"QCOW2BIOS", vm.SeaBIOS, qcow2Disk, formattedOnly},
	{"ISOBIOS", vm.SeaBIOS, func(*testing.T) vm.Option { return vm.WithCDROM(media.iso) }, nil},
	{"ISOUEFI", vm.OVMF, func(*testing.T) vm.Option { return vm.WithCDROM(media.iso) }, nil},
	{"ISOUSBBIOS", vm.SeaBIOS, func(*testing.T) vm.Option { return vm.WithUSBDisk(media.iso) }, nil},
	{"ISOUSBUEFI", vm.OVMF, func(*testing.T) vm.Option { return vm.WithUSBDisk(media.iso) }, nil},
}

// TestMediaBoot boots every entry of mediaBoots, one subtest each (run
// one with -run 'TestMediaBoot/RawBIOS'): the firmware's hand-offs
// (OVMF → systemd-boot; SeaBIOS → syslinux's GPT MBR → syslinux on the
// ESP for a disk, isolinux for the ISO as CD or as USB stick through its
// isohybrid MBR), kpaas-init, the entry's own lines, the switch to the
// root, and the agent's config and ready lines. The subtests run side by
// side, as many at a time as go test's -parallel (GOMAXPROCS: one
// single-vCPU VM per host core); no VM writes the shared media (a CD-ROM
// is read-only, a disk or USB stick a snapshot of its own).
func TestMediaBoot(t *testing.T) {
	for _, c := range mediaBoots {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			vm.Need(t, "qemu-system-x86_64", "cp")
			buildMedia(t)
			marks := append(firmwareMarks(c.firmware, c.name), `kpaas-init .*: starting`)
			marks = append(append(marks, c.marks...), `kpaas-init: switching root`)
			bootMedia(t, marks, vm.WithFirmware(c.firmware), c.medium(t))
		})
	}
}

// firmwareMarks are the hand-offs f shows for a medium (named ISO… or a disk).
func firmwareMarks(f vm.Firmware, medium string) []string {
	switch {
	case f == vm.OVMF:
		return ovmfMarks
	case strings.HasPrefix(medium, "ISO"):
		return seabiosISO
	}
	return seabiosDisk
}

// biggerRaw is a sparse copy of the raw disk, 1 GiB larger.
func biggerRaw(t *testing.T) vm.Option {
	t.Helper()
	raw := filepath.Join(t.TempDir(), "bigger.raw")
	if out, err := exec.Command("cp", "--sparse=always", media.raw, raw).CombinedOutput(); err != nil {
		t.Fatalf("copying the raw disk: %v\n%s", err, out)
	}
	fi, err := os.Stat(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(raw, fi.Size()+1<<30); err != nil {
		t.Fatal(err)
	}
	return vm.WithDisk(raw, "raw")
}

func qcow2Disk(*testing.T) vm.Option { return vm.WithDisk(media.qcow2, "qcow2") }

// TestMediaRawGrowOnce boots a writable copy of the raw disk, enlarged
// by 1 GiB, twice: the first boot grows KPAAS-STATE to the disk's end (sfdisk
// verifies the GPT after it, and the ext4 made fills the partition), the
// second neither grows nor formats it. It runs side by side with
// TestMediaISOInstall's installs (go test's -parallel bounds the VMs).
func TestMediaRawGrowOnce(t *testing.T) {
	t.Parallel()
	vm.Need(t, "qemu-system-x86_64", "cp", "sfdisk")
	buildMedia(t)
	raw := filepath.Join(t.TempDir(), "bigger.raw")
	if out, err := exec.Command("cp", "--sparse=always", media.raw, raw).CombinedOutput(); err != nil {
		t.Fatalf("copying the raw disk: %v\n%s", err, out)
	}
	fi, err := os.Stat(raw)
	if err != nil {
		t.Fatal(err)
	}
	size := fi.Size() + 1<<30
	if err := os.Truncate(raw, size); err != nil {
		t.Fatal(err)
	}
	writable := vm.WithArgs("-drive", "file="+raw+",if=virtio,format=raw")

	v := vm.Start(t, vm.WithFirmware(vm.OVMF), writable)
	v.Expect(`kpaas-init: grew KPAAS-STATE \(/dev/vda5\) to 1\.\d GiB`, bootTimeout)
	v.Expect(`kpaas-init: formatting /dev/vda5`, bootTimeout)
	v.Expect(agentReady, bootTimeout)
	v.Stop()

	out, err := exec.Command("sfdisk", "--verify", raw).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "No errors detected") || strings.Contains(string(out), "mismatch") {
		t.Errorf("sfdisk --verify after the first boot: %v\n%s", err, out)
	}
	ps := sfdiskParts(t, raw)
	if len(ps) != 5 || ps[4].Name != "KPAAS-STATE" || ps[4].Start+ps[4].Size != size/512-33 {
		t.Fatalf("after the first boot sfdisk reads %+v; want KPAAS-STATE to end at sector %d", ps, size/512-34)
	}
	// The ext4 superblock: blocks count and block size.
	f, err := os.Open(raw)
	if err != nil {
		t.Fatal(err)
	}
	sb := make([]byte, 1024)
	_, err = f.ReadAt(sb, ps[4].Start*512+1024)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	fsBytes := int64(binary.LittleEndian.Uint32(sb[4:])) << (10 + binary.LittleEndian.Uint32(sb[24:]))
	if part := ps[4].Size * 512; binary.LittleEndian.Uint16(sb[56:]) != 0xef53 || fsBytes < part-(4<<20) || fsBytes > part {
		t.Errorf("the state's ext4 has %d bytes; the partition %d", fsBytes, part)
	}
	t.Logf("KPAAS-STATE: %d MiB partition, %d MiB ext4", ps[4].Size>>11, fsBytes>>20)

	v = vm.Start(t, vm.WithFirmware(vm.OVMF), writable)
	if line, _ := v.Expect(`kpaas-init: (grew|formatting|switching root)`, bootTimeout); !strings.Contains(line, "switching root") {
		t.Errorf("second boot: %s", line)
	}
	v.Expect(agentReady, bootTimeout)
}

// TestMediaISOInstall installs from the ISO onto an empty disk and boots
// the disk, once with the installer booted under SeaBIOS (from CD:
// isolinux) and once under OVMF (systemd-boot): an unattended installer
// ISO (`--install auto`, the same bundle and config), kpaas-init picks the
// only empty disk, writes the ISO's install plan onto it, reads it back,
// grows KPAAS-STATE to the disk's end and reboots (QEMU runs with
// -no-reboot, so it exits). The disk then holds the raw image's MBR boot
// code, ESP, root and bundle byte for byte, passes sfdisk --verify, and
// boots alone to the agent under the installer's firmware (the first boot
// formats KPAAS-STATE) and then under the other one: SeaBIOS → syslinux,
// OVMF → systemd-boot. Booting the installer again (under SeaBIOS) with
// that disk in boots the installed system instead of installing twice.
// The two installs run side by side, each on a target disk of its own.
func TestMediaISOInstall(t *testing.T) {
	t.Parallel()
	vm.Need(t, "qemu-system-x86_64", "sfdisk")
	buildMedia(t)
	ctx := context.Background()
	sum, err := image.Build(ctx, image.Options{Bundle: media.bundle, Out: filepath.Join(t.TempDir(), "installer"), Config: media.config,
		Formats: []disk.Format{disk.ISO}, Install: "auto", Progress: progress.New(testWriter{t})})
	if err != nil {
		t.Fatalf("image build --install auto: %v", err)
	}
	iso, plan := sum.Outputs[0].Path, sum.Outputs[0].Install
	t.Logf("installer ISO %d MiB; its plan writes %d MiB onto a disk of at least %d MiB", sum.Outputs[0].Size>>20, plan.Bytes>>20, plan.DiskSize>>20)

	diskBoot := map[vm.Firmware][]string{vm.SeaBIOS: seabiosDisk, vm.OVMF: ovmfMarks}
	for _, c := range []struct {
		name            string
		installer, then vm.Firmware
		isoMark         string
	}{
		{"FromSeaBIOS", vm.SeaBIOS, vm.OVMF, `ISOLINUX`},
		{"FromOVMF", vm.OVMF, vm.SeaBIOS, `BdsDxe: starting`},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			// an empty disk, 1 GiB larger than the image
			target := filepath.Join(t.TempDir(), "target.raw")
			size := plan.DiskSize + 1<<30
			if err := os.WriteFile(target, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(target, size); err != nil {
				t.Fatal(err)
			}
			writable := vm.WithArgs("-drive", "file="+target+",if=virtio,format=raw", "-boot", "order=d")

			v := vm.Start(t, vm.WithFirmware(c.installer), vm.WithCDROM(iso), writable)
			v.Expect(c.isoMark, bootTimeout)
			v.Expect(`kpaas-init: install: writing [\d.]+ [MG]iB onto /dev/vda`, bootTimeout)
			v.Expect(`kpaas-init: install: verifying 100%`, bootTimeout)
			v.Expect(`kpaas-init: install: KPAAS-STATE spans 1\.\d GiB to the end of /dev/vda`, bootTimeout)
			_, at := v.Expect(`kpaas-init: install: /dev/vda installed and verified \(disk `+plan.DiskGUID+`\); rebooting`, bootTimeout)
			if err := v.Exited(time.Minute); err != nil {
				t.Fatalf("QEMU after the installer's reboot: %v", err)
			}
			t.Logf("installed under %s after %.1fs", c.installer, at.Seconds())

			out, err := exec.Command("sfdisk", "--verify", target).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "No errors detected") {
				t.Errorf("sfdisk --verify of the installed disk: %v\n%s", err, out)
			}
			sameRegions(t, media.raw, target, "EFI", "KPAAS-ROOT-A", "KPAAS-BUNDLE")
			sameMBRCode(t, media.raw, target)

			// the installed disk alone: under the installer's firmware
			// (its first boot formats the state), then under the other
			for i, fw := range []vm.Firmware{c.installer, c.then} {
				marks := diskBoot[fw]
				if i == 0 {
					marks = append(marks, formattedOnly...)
				}
				v = vm.Start(t, vm.WithFirmware(fw), vm.WithArgs("-drive", "file="+target+",if=virtio,format=raw"))
				for _, m := range append(marks, `kpaas-init: switching root`, agentConfig) {
					v.Expect(m, bootTimeout)
				}
				_, at = v.Expect(agentReady, bootTimeout)
				t.Logf("the disk installed under %s, booted under %s: agent ready after %.1fs", c.installer, fw, at.Seconds())
				v.Stop()
			}

			if c.installer != vm.SeaBIOS {
				return
			}
			// the installer again, with the installed disk in
			v = vm.Start(t, vm.WithCDROM(iso), writable)
			v.Expect(`kpaas-init: install: /dev/vda carries this installation already`, bootTimeout)
			v.Expect(`kpaas-init: switching root`, bootTimeout)
			v.Expect(agentReady, bootTimeout)
		})
	}
}

// sameRegions compares the named GPT partitions' used bytes of two disks
// (the used size is the first disk's squashfs or the whole ESP).
func sameRegions(t *testing.T, want, got string, names ...string) {
	t.Helper()
	parts := sfdiskParts(t, want)
	a, err := os.Open(want)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := os.Open(got)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, name := range names {
		found := false
		for _, p := range parts {
			if p.Name != name {
				continue
			}
			found = true
			n := p.Size * 512
			if name != "EFI" { // the squashfs's own size
				sb := make([]byte, 48)
				a.ReadAt(sb, p.Start*512)
				n = int64(binary.LittleEndian.Uint64(sb[40:]))
			}
			x, y := make([]byte, n), make([]byte, n)
			a.ReadAt(x, p.Start*512)
			b.ReadAt(y, p.Start*512)
			if string(x) != string(y) {
				t.Errorf("installed %s differs from the raw image's (%d bytes)", name, n)
			} else {
				t.Logf("installed %s equals the raw image's (%d bytes)", name, n)
			}
		}
		if !found {
			t.Errorf("%s has no partition %s", want, name)
		}
	}
}

// sameMBRCode compares the MBR boot code (the first 440 bytes) of two disks.
func sameMBRCode(t *testing.T, want, got string) {
	t.Helper()
	var code [2][440]byte
	for i, p := range []string{want, got} {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.ReadAt(code[i][:], 0)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	if code[0] != code[1] {
		t.Error("the installed disk's MBR boot code differs from the raw image's")
	}
}

// part is a GPT partition as sfdisk reads it (sectors).
type part struct {
	Start, Size int64
	Name        string
}

// sfdiskParts reads a disk image's partitions with sfdisk --json.
func sfdiskParts(t *testing.T, disk string) []part {
	t.Helper()
	out, err := exec.Command("sfdisk", "--json", disk).Output()
	if err != nil {
		t.Fatalf("sfdisk --json %s: %v", disk, err)
	}
	var pt struct{ PartitionTable struct{ Partitions []part } }
	if err := json.Unmarshal(out, &pt); err != nil {
		t.Fatal(err)
	}
	return pt.PartitionTable.Partitions
}
