package initramfs

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"kpaas.dev/appliance/internal/testenv"
)

// fakeModules writes a modules directory: modules.dep with a few modules
// (one unrelated to the initramfs) and modules.builtin.
func fakeModules(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"modules.dep": "kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko\nkernel/fs/jbd2/jbd2.ko:\n" +
			"kernel/drivers/block/virtio_blk.ko:\nkernel/sound/snd.ko:\n",
		"modules.builtin":                    "kernel/fs/squashfs/squashfs.ko\n",
		"kernel/fs/ext4/ext4.ko":             "ext4",
		"kernel/fs/jbd2/jbd2.ko":             "jbd2",
		"kernel/drivers/block/virtio_blk.ko": "vblk",
		"kernel/sound/snd.ko":                "snd",
	}
	for name, body := range files {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func build(t *testing.T, mods string, names []string) []byte {
	t.Helper()
	init := filepath.Join(t.TempDir(), "init")
	os.WriteFile(init, []byte("#!/bin/true\n"), 0o755)
	var b bytes.Buffer
	if _, err := Write(&b, Options{Init: init, ModulesDir: mods, KernelRelease: "6.1.0-test", Modules: names}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// The archive holds /init, /dev/console and the selected modules with a
// modules.dep of just them; an independent cpio lists it; two builds are
// identical.
func TestWrite(t *testing.T) {
	mods := fakeModules(t)
	names := []string{"virtio_blk", "ext4", "squashfs"}
	a := build(t, mods, names)
	if b := build(t, mods, names); !bytes.Equal(a, b) {
		t.Fatal("two builds differ")
	}
	testenv.RequireTool(t, "cpio")
	cmd := exec.Command("cpio", "-tv", "--quiet")
	cmd.Stdin = bytes.NewReader(a)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("cpio -t: %v", err)
	}
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(l)
		got = append(got, f[0]+" "+f[len(f)-1])
	}
	want := []string{
		"drwxr-xr-x dev",
		"crw------- dev/console",
		"-rwxr-xr-x init",
		"drwxr-xr-x lib",
		"drwxr-xr-x lib/modules",
		"drwxr-xr-x lib/modules/6.1.0-test",
		"drwxr-xr-x lib/modules/6.1.0-test/kernel",
		"drwxr-xr-x lib/modules/6.1.0-test/kernel/drivers",
		"drwxr-xr-x lib/modules/6.1.0-test/kernel/drivers/block",
		"-rw-r--r-- lib/modules/6.1.0-test/kernel/drivers/block/virtio_blk.ko",
		"drwxr-xr-x lib/modules/6.1.0-test/kernel/fs",
		"drwxr-xr-x lib/modules/6.1.0-test/kernel/fs/ext4",
		"-rw-r--r-- lib/modules/6.1.0-test/kernel/fs/ext4/ext4.ko",
		"drwxr-xr-x lib/modules/6.1.0-test/kernel/fs/jbd2",
		"-rw-r--r-- lib/modules/6.1.0-test/kernel/fs/jbd2/jbd2.ko",
		"-rw-r--r-- lib/modules/6.1.0-test/modules.builtin",
		"-rw-r--r-- lib/modules/6.1.0-test/modules.dep",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("cpio -t:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	x := t.TempDir()
	cmd = exec.Command("cpio", "-id", "--quiet")
	cmd.Dir, cmd.Stdin = x, bytes.NewReader(a)
	if out, err := cmd.CombinedOutput(); err != nil && !strings.Contains(string(out), "console") {
		t.Fatalf("cpio -i: %v %s", err, out)
	}
	dep, _ := os.ReadFile(filepath.Join(x, "lib/modules/6.1.0-test/modules.dep"))
	if want := "kernel/drivers/block/virtio_blk.ko:\nkernel/fs/jbd2/jbd2.ko:\nkernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko\n"; string(dep) != want {
		t.Errorf("modules.dep:\n%s\nwant:\n%s", dep, want)
	}
}

func TestWriteMissingModule(t *testing.T) {
	init := filepath.Join(t.TempDir(), "init")
	os.WriteFile(init, []byte("x"), 0o755)
	_, err := Write(new(bytes.Buffer), Options{Init: init, ModulesDir: fakeModules(t), KernelRelease: "6.1.0-test", Modules: []string{"ext4", "isofs"}})
	if err == nil || !strings.Contains(err.Error(), "isofs") {
		t.Fatalf("err = %v, want isofs not found", err)
	}
}

// The real initramfs, when `kpaas os build` output is at hand
// (KPAAS_OS_DIR): lists with cpio and carries every module kpaas-init needs.
func TestRealInitramfs(t *testing.T) {
	dir := os.Getenv("KPAAS_OS_DIR")
	if dir == "" {
		t.Skip("KPAAS_OS_DIR not set") // opt-in: the output of a `kpaas os build`
	}
	cmd := exec.Command("cpio", "-t", "--quiet")
	f, err := os.Open(filepath.Join(dir, "boot", "initramfs.cpio.zst"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := zstd.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	cmd.Stdin = zr
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"/virtio_blk.ko", "/ext4.ko", "/squashfs.ko", "/overlay.ko", "/isofs.ko", "/sr_mod.ko", "/ahci.ko", "/crc32c_generic.ko", "/vfat.ko", "modules.dep", "\ninit\n"} {
		if !strings.Contains("\n"+string(out), m) {
			t.Errorf("initramfs lacks %s", m)
		}
	}
}
