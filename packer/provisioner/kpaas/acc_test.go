package kpaas

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/packer-plugin-sdk/acctest"
	"golang.org/x/crypto/ssh"

	"kpaas.dev/appliance/builder/osimage"
	"kpaas.dev/appliance/packer/internal/acc"
	"kpaas.dev/appliance/qemu-tests/vm"
)

// siteBaseVersion names the cached site base image; change it with
// siteBaseArgs.
const siteBaseVersion = "site-debian-12-v2"

// siteBaseArgs is mmdebstrap's recipe for a stand-in of a site's own base
// image: a plain Debian 12 with its own kernel and initrd, systemd, an
// SSH server, DHCP on the first NIC (systemd-networkd) and the host tools
// a node needs, and no kpaas at all.
func siteBaseArgs(out string) []string {
	return []string{"--mode=root", "--variant=minbase", "--format=tar",
		"--include=linux-image-amd64,systemd-sysv,udev,dbus,openssh-server,iproute2,kmod,procps,iptables,conntrack,socat,ethtool",
		"--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-exclude=/usr/share/locale/*",
		`--customize-hook=printf "[Match]\nName=en* eth*\n[Network]\nDHCP=yes\n" > "$1/etc/systemd/network/80-dhcp.network"; chroot "$1" systemctl enable systemd-networkd; echo site-base > "$1/etc/hostname"; : > "$1/etc/machine-id"`,
		"bookworm", out, "http://deb.debian.org/debian"}
}

// siteBase returns the site base image's root tar, built once (root,
// mmdebstrap, a few minutes) into $KPAAS_CACHE/packer-test.
func siteBase(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(filepath.Dir(osimage.DefaultCacheDir()), "packer-test")
	out := filepath.Join(dir, siteBaseVersion+".tar")
	if _, err := os.Stat(out); err == nil {
		return out
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if b, err := exec.Command("mmdebstrap", siteBaseArgs(out+".tmp")...).CombinedOutput(); err != nil {
		os.Remove(out + ".tmp")
		t.Fatalf("mmdebstrap: %v\n%s", err, b)
	}
	if err := os.Rename(out+".tmp", out); err != nil {
		t.Fatal(err)
	}
	t.Logf("site base image built in %s", time.Since(start).Round(time.Second))
	return out
}

// siteDisk makes the base disk the qemu builder boots: the site base's
// root as a bare ext4 file system (qcow2), root's SSH key authorized; and
// returns its kernel and initrd for a direct boot.
func siteDisk(t *testing.T, dir, pubKey string) (disk, kernel, initrd string) {
	t.Helper()
	root := filepath.Join(dir, "root")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	run := func(name string, args ...string) {
		t.Helper()
		if b, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, b)
		}
	}
	run("tar", "-xf", siteBase(t), "-C", root, "--numeric-owner")
	if err := os.MkdirAll(filepath.Join(root, "root/.ssh"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "root/.ssh/authorized_keys"), []byte(pubKey), 0o600); err != nil {
		t.Fatal(err)
	}
	find := func(glob string) string {
		m, _ := filepath.Glob(filepath.Join(root, "boot", glob))
		if len(m) != 1 {
			t.Fatalf("%s in the site base: %v", glob, m)
		}
		p := filepath.Join(dir, filepath.Base(m[0]))
		run("cp", m[0], p)
		return p
	}
	kernel, initrd = find("vmlinuz-*"), find("initrd.img-*")
	raw := filepath.Join(dir, "site.raw")
	run("mkfs.ext4", "-q", "-F", "-L", "site-root", "-d", root, raw, "4G")
	disk = filepath.Join(dir, "site.qcow2")
	run("qemu-img", "convert", "-O", "qcow2", raw, disk)
	os.Remove(raw)
	os.RemoveAll(root)
	return disk, kernel, initrd
}

// sshKey writes an ed25519 key pair; it returns the private key file and
// the authorized_keys line.
func sshKey(t *testing.T, dir string) (string, string) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "packer acceptance test")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "id_ed25519")
	if err := os.WriteFile(p, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return p, string(ssh.MarshalAuthorizedKey(sp))
}

// TestAccProvisionQEMU runs examples/provision-qemu.pkr.hcl under a real
// Packer: Packer's qemu builder boots a plain Debian base image (TCG), the
// kpaas provisioner makes it a node over SSH (kpaas-agent from the demo
// bundle's OS image, the node files, the bundle), a shell provisioner
// shows the result; then the image boots on its own to the agent's line.
func TestAccProvisionQEMU(t *testing.T) {
	demo := acc.Require(t, "qemu-system-x86_64", "qemu-img", "mkfs.ext4", "tar", "mmdebstrap", "cp")
	if os.Geteuid() != 0 {
		t.Skip("the site base image is built and unpacked as root")
	}
	dir := vm.Dir(t)
	key, authorized := sshKey(t, dir)
	start := time.Now()
	disk, kernel, initrd := siteDisk(t, filepath.Join(dir, "site"), authorized)
	t.Logf("site base disk in %s", time.Since(start).Round(100*time.Millisecond))
	t.Chdir(dir)
	for k, v := range map[string]string{"bundle": demo, "kernel": kernel, "initrd": initrd, "ssh_private_key_file": key} {
		t.Setenv("PKR_VAR_"+k, v)
	}
	wants := []string{"phase target (3/5): done", "phase install (5/5): done",
		"node file 755 root /usr/local/bin/kubelet", "node file 644 root /etc/sysctl.d/99-kubernetes.conf",
		"node file 755 root /usr/bin/kpaas-agent"}
	first := provision(t, "kpaas_provision_qemu", disk, wants)
	// Provisioned again (the node image as a base): only what the machine
	// lacks is uploaded.
	again := provision(t, "kpaas_reprovision_qemu", first, append(wants, "not uploaded again"))
	v := vm.Start(t, vm.WithKernel(kernel, initrd, "root=/dev/vda rw console=ttyS0,115200"), vm.WithDisk(again, "qcow2"))
	line, at := v.Expect(acc.AgentReady(t, demo), 8*time.Minute)
	t.Logf("the provisioned image booted to the agent in %.1fs: %s", at.Seconds(), line)
}

// provision runs examples/provision-qemu.pkr.hcl on base and returns the
// image; the build's log must hold every line of wants.
func provision(t *testing.T, name, base string, wants []string) string {
	t.Helper()
	out := filepath.Join(filepath.Dir(filepath.Dir(base)), name)
	serial := filepath.Join(filepath.Dir(out), name+"-serial.log")
	t.Setenv("PKR_VAR_base_disk", base)
	t.Setenv("PKR_VAR_output_directory", out)
	t.Setenv("PKR_VAR_serial_log", serial)
	start := time.Now()
	acctest.TestPlugin(t, &acctest.PluginTestCase{
		Name:     name,
		Type:     "kpaas",
		Template: acc.Example(t, "provision-qemu.pkr.hcl"),
		Check: func(cmd *exec.Cmd, logfile string) error {
			if err := acc.Succeeded(cmd, logfile); err != nil {
				if b, _ := os.ReadFile(serial); len(b) > 0 {
					t.Logf("the VM's console:\n%s", tailString(string(b), 4000))
				}
				return err
			}
			b, _ := os.ReadFile(logfile)
			for _, l := range strings.Split(string(b), "\n") {
				if i := strings.Index(l, "phase "); i >= 0 && strings.Contains(l, "qemu.site") {
					t.Log(strings.TrimSuffix(l[i:], "\x1b[0m"))
				}
			}
			for _, want := range wants {
				if !strings.Contains(string(b), want) {
					return &acc.BuildError{Log: "the log lacks " + want + "\n" + tailString(string(b), 6000)}
				}
			}
			return nil
		},
	})
	t.Logf("%s: packer build (qemu builder + kpaas provisioner) in %s", name, time.Since(start).Round(100*time.Millisecond))
	return filepath.Join(out, "node.qcow2")
}

func tailString(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
