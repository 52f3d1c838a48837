package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kpaas.dev/appliance/builder/disk"
	"kpaas.dev/appliance/internal/bundle"
	"kpaas.dev/appliance/internal/progress"
	"kpaas.dev/appliance/internal/testenv"
)

func need(t *testing.T, tools ...string) {
	t.Helper()
	testenv.RequireTools(t, tools...)
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

type sfdiskTable struct {
	PartitionTable struct {
		Label      string `json:"label"`
		SectorSize int64  `json:"sectorsize"`
		Partitions []struct {
			Node  string `json:"node"`
			Start int64  `json:"start"`
			Size  int64  `json:"size"`
			Type  string `json:"type"`
			Name  string `json:"name"`
		} `json:"partitions"`
	} `json:"partitiontable"`
}

// partition copies partition name of a raw image into a file.
func partition(t *testing.T, raw string, table sfdiskTable, name string) (path string, offset int64) {
	t.Helper()
	for _, p := range table.PartitionTable.Partitions {
		if p.Name != name {
			continue
		}
		f, err := os.Open(raw)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		path = filepath.Join(t.TempDir(), name)
		out, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		defer out.Close()
		if _, err := io.Copy(out, io.NewSectionReader(f, p.Start*512, p.Size*512)); err != nil {
			t.Fatal(err)
		}
		return path, p.Start * 512
	}
	t.Fatalf("no partition %s", name)
	return "", 0
}

func TestBuild(t *testing.T) {
	need(t, "sfdisk", "unsquashfs", "mtype", "mcopy", "qemu-img", "xorriso")
	fx := newFixture(t, fixtureOptions{sign: true})
	pub, err := bundle.LoadPublicKey(fx.pub)
	if err != nil {
		t.Fatal(err)
	}
	dir, out := outDir(t)
	config := filepath.Join(t.TempDir(), "cluster.yaml")
	os.WriteFile(config, []byte("apiVersion: kpaas.dev/v1alpha1\nkind: Cluster\n"), 0o644)
	var log bytes.Buffer
	sum, err := Build(context.Background(), Options{
		Bundle: fx.dir, Out: out, Config: config, PublicKey: pub,
		Formats:  []disk.Format{disk.ISO, disk.Raw, disk.QCOW2},
		Progress: progress.New(&log, progress.Terminal(false)),
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	t.Logf("progress:\n%s", log.String())
	if got := listDir(t, dir); got != "node.iso node.qcow2 node.raw" {
		t.Errorf("output folder holds %q", got)
	}
	for _, phase := range []string{"phase verify (1/11): done", "phase layers (3/11)", "phase files (4/11): done", "phase raw (8/11)", "phase qcow2 (9/11)", "phase iso (10/11)", "phase publish (11/11): done"} {
		if !strings.Contains(log.String(), phase) {
			t.Errorf("no %q in the progress", phase)
		}
	}
	if sum.OS != osRef || sum.KernelRelease != "6.1.0-test" || len(sum.Outputs) != 3 || len(sum.BundleOmitted) != 3 || sum.OmittedBytes == 0 || len(sum.NodeFiles) != 1 {
		t.Errorf("summary %+v", sum)
	}
	if !strings.Contains(sum.Cmdline, "kpaas.root=KPAAS-ROOT-A") || !strings.Contains(sum.Cmdline, "console=ttyS0") {
		t.Errorf("cmdline %q", sum.Cmdline)
	}
	for _, o := range sum.Outputs { // raw, qcow2 and ISO boot under both
		if fmt.Sprint(o.Firmware) != "[bios uefi]" {
			t.Errorf("%s boots under %v, want bios and uefi", o.Format, o.Firmware)
		}
	}

	// raw: the partition table
	raw := out + ".raw"
	var table sfdiskTable
	if err := json.Unmarshal([]byte(run(t, "sfdisk", "--json", raw)), &table); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range table.PartitionTable.Partitions {
		names = append(names, p.Name)
	}
	if table.PartitionTable.Label != "gpt" || strings.Join(names, " ") != "EFI KPAAS-ROOT-A KPAAS-ROOT-B KPAAS-BUNDLE KPAAS-STATE" {
		t.Errorf("partitions %v (%s)", names, table.PartitionTable.Label)
	}

	// root: the layers applied, owners and device nodes kept, kubeadm added
	root, _ := partition(t, raw, table, disk.NameRootA)
	ls := run(t, "unsquashfs", "-lln", root)
	for _, want := range []string{"crw------- 0/0", "squashfs-root/dev/console", "-rwxr-xr-x 0/0", "squashfs-root/usr/bin/kpaas-agent", "squashfs-root/usr/bin/kubeadm",
		"-rw-r----- 0/0", "squashfs-root/etc/shadow", "squashfs-root/boot/kpaas/initramfs.cpio.zst", "squashfs-root/vmlinuz -> " + kernelPath} {
		if !strings.Contains(ls, want) {
			t.Errorf("root has no %q:\n%s", want, ls)
		}
	}
	if strings.Contains(ls, "obsolete") {
		t.Error("root has the whited-out usr/lib/obsolete")
	}

	// bundle: everything but the OS image's layers and kubeadm's bytes
	bund, _ := partition(t, raw, table, disk.NameBundle)
	bl := run(t, "unsquashfs", "-l", bund)
	for _, want := range []string{"squashfs-root/index.json", "squashfs-root/SHA256SUMS.sig", "squashfs-root/oci-layout", fx.osEntry.Digest.Hex} {
		if !strings.Contains(bl, want) {
			t.Errorf("bundle has no %q:\n%s", want, bl)
		}
	}
	for _, h := range append(fx.layers, fx.files...) {
		if strings.Contains(bl, h.Hex) {
			t.Errorf("bundle holds the blob %s, whose content is in the root", h)
		}
	}

	// ESP: systemd-boot, its entry, kernel, initramfs, config
	_, espOff := partition(t, raw, table, disk.NameESP)
	img := fmt.Sprintf("%s@@%d", raw, espOff)
	entry := run(t, "mtype", "-i", img, "::/loader/entries/kpaas.conf")
	for _, want := range []string{"linux   /kpaas/vmlinuz", "initrd  /kpaas/initrd.img", "options console=tty0 console=ttyS0,115200 quiet systemd.show_status=1 kpaas.root=KPAAS-ROOT-A"} {
		if !strings.Contains(entry, want) {
			t.Errorf("loader entry has no %q:\n%s", want, entry)
		}
	}
	pubPEM, err := os.ReadFile(fx.pub)
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string][]byte{
		"::/kpaas/bundle.pub": pubPEM, // the agent checks the signature with it
		"::/kpaas/vmlinuz":    kernelBytes, "::/kpaas/initrd.img": initrdBytes,
		"::/EFI/BOOT/BOOTX64.EFI": sdbootBytes, "::/kpaas/cluster.yaml": []byte("apiVersion: kpaas.dev/v1alpha1\nkind: Cluster\n"),
	} {
		got := filepath.Join(t.TempDir(), "f")
		run(t, "mcopy", "-n", "-i", img, p, got)
		if b, _ := os.ReadFile(got); !bytes.Equal(b, want) {
			t.Errorf("%s: %d bytes, want %d", p, len(b), len(want))
		}
	}

	// qcow2: sound and the same disk
	run(t, "qemu-img", "check", out+".qcow2")
	if cmp := run(t, "qemu-img", "compare", "-f", "raw", "-F", "qcow2", raw, out+".qcow2"); !strings.Contains(cmp, "identical") {
		t.Errorf("qemu-img compare: %s", cmp)
	}

	// ISO: BIOS and UEFI boot, the payloads
	iso := out + ".iso"
	find := run(t, "xorriso", "-indev", iso, "-find", "/", "-type", "f")
	for _, want := range []string{"/kpaas/root.squashfs", "/kpaas/bundle.squashfs", "/kpaas/vmlinuz", "/kpaas/initrd.img", "/isolinux/isolinux.cfg", "/boot/efiboot.img"} {
		if !strings.Contains(find, want) {
			t.Errorf("ISO has no %s:\n%s", want, find)
		}
	}
	et := run(t, "xorriso", "-indev", iso, "-report_el_torito", "plain")
	if !strings.Contains(et, "BIOS") || !strings.Contains(et, "UEFI") {
		t.Errorf("El Torito:\n%s", et)
	}
	cfg := filepath.Join(t.TempDir(), "isolinux.cfg")
	run(t, "xorriso", "-osirrox", "on", "-indev", iso, "-extract", "/isolinux/isolinux.cfg", cfg)
	if b, _ := os.ReadFile(cfg); !strings.Contains(string(b), "append console=tty0") || strings.Contains(string(b), "kpaas.root") {
		t.Errorf("isolinux.cfg:\n%s", b)
	}
}

// Two builds of the same bundle, a second apart, give the same bytes in
// every format (the ISO too: its dates are the build time).
func TestDeterministic(t *testing.T) {
	fx := newFixture(t, fixtureOptions{})
	formats := []disk.Format{disk.Raw, disk.QCOW2, disk.ISO}
	if _, err := disk.FindSyslinux(); err != nil {
		formats = formats[:2] // the fixture's OS image has no syslinux files; the host lacks them too
	}
	digests := func() map[disk.Format][32]byte {
		_, out := outDir(t)
		if _, err := Build(context.Background(), Options{Bundle: fx.dir, Out: out, Formats: formats}); err != nil {
			t.Fatal(err)
		}
		d := map[disk.Format][32]byte{}
		for _, f := range formats {
			file, err := os.Open(OutputPath(out, f))
			if err != nil {
				t.Fatal(err)
			}
			h := sha256.New()
			io.Copy(h, file)
			file.Close()
			d[f] = [32]byte(h.Sum(nil))
		}
		return d
	}
	a := digests()
	time.Sleep(1100 * time.Millisecond) // a clock stamp would now differ
	b := digests()
	for _, f := range formats {
		if a[f] != b[f] {
			t.Errorf("two %s images of the same bundle differ", f)
		}
	}
	if len(formats) < 3 {
		t.Log("ISO not checked: no syslinux files (Debian packages isolinux, syslinux-common)")
	}
}

func TestBadInput(t *testing.T) {
	good := newFixture(t, fixtureOptions{sign: true})
	cases := []struct {
		name    string
		fixture *fixture
		opts    func(*Options)
		want    string
		is      error
	}{
		{name: "no OS image", fixture: newFixture(t, fixtureOptions{noOS: true}),
			want: "has no OS image (os.image in the manifest)", is: ErrNoOS},
		{name: "missing kernel", fixture: newFixture(t, fixtureOptions{kernel: "boot/vmlinuz-missing"}),
			want: "kernel (dev.kpaas.os.kernel) /boot/vmlinuz-missing"},
		{name: "no kernel annotation", fixture: newFixture(t, fixtureOptions{kernel: "/"}),
			want: "no dev.kpaas.os.kernel annotation"},
		{name: "disk too small", fixture: good, opts: func(o *Options) { o.DiskSize = 8 << 20 }, is: disk.ErrTooSmall},
		{name: "unsupported format", fixture: good, opts: func(o *Options) { o.Formats = []disk.Format{disk.Raw, "vmdk"} },
			want: `unsupported image format "vmdk"`},
		{name: "wrong key", fixture: good, opts: func(o *Options) {
			o.PublicKey, _ = bundle.LoadPublicKey(newFixture(t, fixtureOptions{sign: true}).pub)
		}, want: "signature"},
		{name: "missing config", fixture: good, opts: func(o *Options) { o.Config = "/nonexistent/cluster.yaml" }, want: "config"},
		{name: "not a bundle", fixture: &fixture{dir: t.TempDir()}, want: "not an OCI layout"},
		{name: "install target", fixture: good, opts: func(o *Options) { o.Install = "sda" },
			want: `install target "sda": want auto or a disk such as /dev/sda`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir, out := outDir(t)
			o := Options{Bundle: c.fixture.dir, Out: out, Formats: []disk.Format{disk.Raw, disk.QCOW2}}
			if c.opts != nil {
				c.opts(&o)
			}
			_, err := Build(context.Background(), o)
			if err == nil {
				t.Fatal("no error")
			}
			if c.want != "" && !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q, want %q in it", err, c.want)
			}
			if c.is != nil && !errors.Is(err, c.is) {
				t.Errorf("error %v is not %v", err, c.is)
			}
			if got := listDir(t, dir); got != "" {
				t.Errorf("left behind: %s", got)
			}
		})
	}

	// a corrupted OS layer: Verify catches it first; the layer reads would too
	t.Run("corrupt layer", func(t *testing.T) {
		fx := newFixture(t, fixtureOptions{})
		p := filepath.Join(fx.dir, "blobs", "sha256", fx.layers[1].Hex)
		b, _ := os.ReadFile(p)
		b[len(b)/2] ^= 0xff
		os.WriteFile(p, b, 0o644)
		dir, out := outDir(t)
		_, err := Build(context.Background(), Options{Bundle: fx.dir, Out: out})
		if err == nil || !strings.Contains(err.Error(), fx.layers[1].Hex) {
			t.Errorf("error %v", err)
		}
		if got := listDir(t, dir); got != "" {
			t.Errorf("left behind: %s", got)
		}
	})
}
