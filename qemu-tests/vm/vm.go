// Package vm starts QEMU virtual machines for tests and matches lines on
// their serial console.
//
// A VM runs under software emulation (TCG, one CPU: measured as fastest on
// two shared cores), without network, and with every
// disk opened snapshot=on, so one built image can be booted by many tests
// and is never changed. Its serial console (and QEMU's own messages) go to
// serial.log in the VM's folder, which Expect reads as it grows.
//
// Lifecycle: Start registers a cleanup with the test that kills the QEMU
// process it started (and only that one) and removes the VM's folder. With
// KPAAS_KEEP_VMS=1, a failed test keeps both instead and logs how to reach
// and remove them. A VM is used by one goroutine.
package vm

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"kpaas.dev/appliance/internal/testenv"
)

// T is what the package needs of its caller: a *testing.T, or a command
// that boots VMs outside `go test` (the demo cluster) with its own
// Fatal, Cleanup and logging.
type T interface {
	Helper()
	Name() string
	Logf(format string, args ...any)
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Skip(args ...any)
	Cleanup(func())
	Failed() bool
}

// KeepEnv is the environment variable that keeps failed tests' VMs and
// folders for debugging.
const KeepEnv = "KPAAS_KEEP_VMS"

// ArtifactsEnv names a folder where every VM's console is copied when its
// test ends (CI keeps them: the node's console carries the agent's and the
// seed's lines).
const ArtifactsEnv = "KPAAS_ARTIFACTS"

// saveArtifact copies a console log into $KPAAS_ARTIFACTS, named after the
// test, numbered when one test boots several VMs.
func saveArtifact(t T, logPath string) {
	dir := os.Getenv(ArtifactsEnv)
	if dir == "" {
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Logf("%s: %v", ArtifactsEnv, err)
		return
	}
	b, err := os.ReadFile(logPath)
	if err != nil {
		return
	}
	base := sanitize(t.Name())
	for i := 1; ; i++ {
		p := filepath.Join(dir, fmt.Sprintf("%s-%d.console.log", base, i))
		f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if os.IsExist(err) {
			continue
		}
		if err != nil {
			t.Logf("%s: %v", ArtifactsEnv, err)
			return
		}
		f.Write(b)
		f.Close()
		return
	}
}

// Keep tells whether failed tests keep their VMs and folders.
func Keep() bool {
	v := os.Getenv(KeepEnv)
	return v != "" && v != "0" && v != "false"
}

// Need skips the test when a program is missing (fails it in CI).
func Need(t T, progs ...string) {
	t.Helper()
	testenv.RequireTools(t, progs...)
}

// Dir is a work folder for the test, removed when it ends, or kept (and
// named in the log) when it failed and KPAAS_KEEP_VMS=1.
func Dir(t T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "kpaas-"+sanitize(t.Name())+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() && Keep() {
			t.Logf("%s: kept %s; remove it with: rm -rf %s", KeepEnv, dir, dir)
			return
		}
		os.RemoveAll(dir)
	})
	return dir
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == ' ' {
			return '_'
		}
		return r
	}, s)
}

// Firmware is what the VM boots with.
type Firmware int

const (
	// SeaBIOS is QEMU's default BIOS (or the direct kernel boot's loader).
	SeaBIOS Firmware = iota
	// OVMF is UEFI: OVMF_CODE_4M.fd with a fresh copy of OVMF_VARS_4M.fd.
	OVMF
)

func (f Firmware) String() string {
	if f == OVMF {
		return "OVMF"
	}
	return "SeaBIOS"
}

type drive struct {
	path, format, iface string
	writable            bool // no snapshot=on: writes reach the image
}

type config struct {
	firmware                Firmware
	kernel, initrd, cmdline string
	drives                  []drive
	memory                  int
	cpus, nics, nice        int
	extra                   []string
}

// Option configures Start.
type Option func(*config)

// WithFirmware boots through f (default SeaBIOS).
func WithFirmware(f Firmware) Option { return func(c *config) { c.firmware = f } }

// WithKernel boots a kernel directly (PVH for an ELF vmlinux).
func WithKernel(kernel, initrd, cmdline string) Option {
	return func(c *config) { c.kernel, c.initrd, c.cmdline = kernel, initrd, cmdline }
}

// WithDisk attaches a virtio disk image; format is raw or qcow2.
func WithDisk(path, format string) Option {
	return func(c *config) { c.drives = append(c.drives, drive{path: path, format: format, iface: "virtio"}) }
}

// WithWritableDisk attaches a virtio disk whose writes reach the image
// (a node's own overlay, which must survive a power cut and a reboot).
func WithWritableDisk(path, format string) Option {
	return func(c *config) {
		c.drives = append(c.drives, drive{path: path, format: format, iface: "virtio", writable: true})
	}
}

// WithCPUs sets the number of virtual CPUs (default 1; kubeadm wants 2
// on a control plane).
func WithCPUs(n int) Option { return func(c *config) { c.cpus = n } }

// WithNIC adds a virtio NIC with mac on the QEMU netdev spec (without its
// id), e.g. "socket,mcast=239.255.0.1:10005,localaddr=127.0.0.1".
func WithNIC(mac, netdev string) Option {
	return func(c *config) {
		id := fmt.Sprintf("n%d", c.nics)
		c.nics++
		c.extra = append(c.extra, "-netdev", netdev+",id="+id, "-device", "virtio-net-pci,netdev="+id+",mac="+mac)
	}
}

// WithCDROM attaches an ISO as a CD-ROM on the q35 AHCI controller.
func WithCDROM(path string) Option {
	return func(c *config) { c.drives = append(c.drives, drive{path: path, format: "raw", iface: "cdrom"}) }
}

// WithUSBDisk attaches a raw image as a USB stick (usb-storage on an XHCI
// controller).
func WithUSBDisk(path string) Option {
	return func(c *config) { c.drives = append(c.drives, drive{path: path, format: "raw", iface: "usb"}) }
}

// WithNice starts QEMU at this scheduling niceness (0 by default; 1..19
// yields the host's CPU to the other VMs when they contend for it).
func WithNice(n int) Option { return func(c *config) { c.nice = n } }

// WithMemory sets the memory in MiB (default 1536).
func WithMemory(mib int) Option { return func(c *config) { c.memory = mib } }

// WithArgs appends QEMU arguments.
func WithArgs(args ...string) Option { return func(c *config) { c.extra = append(c.extra, args...) } }

// VM is one running QEMU.
type VM struct {
	t     T
	dir   string
	cmd   *exec.Cmd
	log   *os.File // the serial log, read from
	rd    *bufio.Reader
	start time.Time
	done  chan struct{}
	err   error // QEMU's exit, once done is closed
	part  []byte
	echo  bool // print console lines as they come (go test -v)
}

// Start starts QEMU and returns at once; the clock of Expect starts here.
func Start(t T, opts ...Option) *VM {
	t.Helper()
	Need(t, "qemu-system-x86_64")
	c := config{memory: 1536, cpus: 1}
	for _, o := range opts {
		o(&c)
	}
	dir := Dir(t)
	args := []string{"-machine", "q35", "-accel", "tcg", "-smp", strconv.Itoa(c.cpus), "-m", strconv.Itoa(c.memory),
		"-nographic", "-no-reboot", "-net", "none",
		"-monitor", "unix:" + filepath.Join(dir, "monitor.sock") + ",server=on,wait=off",
		"-serial", "stdio", "-pidfile", filepath.Join(dir, "qemu.pid")}
	if c.firmware == OVMF {
		code, vars, err := FindOVMF()
		if err != nil {
			testenv.SkipOrFail(t, err.Error())
		}
		own := filepath.Join(dir, "OVMF_VARS.fd")
		if err := copyFile(vars, own); err != nil {
			t.Fatal(err)
		}
		args = append(args, "-drive", "if=pflash,format=raw,readonly=on,file="+code,
			"-drive", "if=pflash,format=raw,file="+own)
	}
	if c.kernel != "" {
		args = append(args, "-kernel", c.kernel, "-initrd", c.initrd, "-append", c.cmdline)
	}
	for i, d := range c.drives {
		switch d.iface {
		case "cdrom":
			args = append(args, "-drive", "file="+d.path+",media=cdrom,readonly=on,format=raw")
		case "usb":
			id := fmt.Sprintf("usb%d", i)
			args = append(args, "-drive", "if=none,id="+id+",file="+d.path+",format="+d.format+",snapshot=on",
				"-device", "qemu-xhci,id=xhci"+id, "-device", "usb-storage,bus=xhci"+id+".0,drive="+id)
		default:
			snap := ",snapshot=on"
			if d.writable {
				// The guest's flushes are not passed to the host: etcd's
				// fsyncs would otherwise dominate a control plane's time.
				// Killing QEMU still keeps what the guest wrote (it is in
				// the host's page cache), so a power cut loses exactly the
				// guest's own unwritten cache.
				snap = ",cache=unsafe"
			}
			args = append(args, "-drive", "file="+d.path+",if="+d.iface+",format="+d.format+snap)
		}
	}
	args = append(args, c.extra...)

	logPath := filepath.Join(dir, "serial.log")
	w, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	r, err := os.Open(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("qemu-system-x86_64", args...)
	if c.nice != 0 {
		// nice(1) execs QEMU: the PID stays, and every thread QEMU starts
		// (one per vCPU) inherits the niceness.
		cmd = exec.Command("nice", append([]string{"-n", strconv.Itoa(c.nice), "qemu-system-x86_64"}, args...)...)
	}
	// A file, not a pipe: a kept VM goes on writing after the test is gone.
	cmd.Stdout, cmd.Stderr = w, w
	v := &VM{t: t, dir: dir, cmd: cmd, log: r, rd: bufio.NewReader(r), done: make(chan struct{})}
	if _, ok := t.(testing.TB); ok {
		v.echo = testing.Verbose()
	}
	t.Logf("qemu-system-x86_64 %s", strings.Join(args, " "))
	if err := cmd.Start(); err != nil {
		r.Close()
		t.Fatal(err)
	}
	v.start = time.Now()
	go func() { v.err = cmd.Wait(); close(v.done) }()
	t.Cleanup(func() {
		defer r.Close()
		saveArtifact(t, logPath)
		if t.Failed() {
			t.Logf("serial console (last lines of %s):\n%s", logPath, tail(logPath, 40))
			if Keep() {
				t.Logf("%s: kept VM pid %d (%s); console: %s, monitor: socat - UNIX-CONNECT:%s; remove with: kill %d; rm -rf %s",
					KeepEnv, cmd.Process.Pid, c.firmware, logPath, filepath.Join(dir, "monitor.sock"), cmd.Process.Pid, dir)
				return
			}
		}
		cmd.Process.Kill() // our own QEMU only
		<-v.done
	})
	return v
}

// Stop kills the VM's QEMU (ours only) and waits for it to exit, so its
// disks can be inspected or booted again.
func (v *VM) Stop() {
	v.cmd.Process.Kill()
	<-v.done
}

// Exited waits for QEMU to exit by itself (it runs with -no-reboot, so a
// guest's reboot ends it) and returns its exit error; it fails the test
// when the timeout passes first.
func (v *VM) Exited(timeout time.Duration) error {
	v.t.Helper()
	select {
	case <-v.done:
		return v.err
	case <-time.After(timeout):
		v.t.Fatalf("QEMU still running after %s", timeout)
		return nil
	}
}

// Console returns everything the VM's serial console printed so far.
func (v *VM) Console() string {
	b, _ := os.ReadFile(filepath.Join(v.dir, "serial.log"))
	return ansi.ReplaceAllString(string(b), "")
}

// Dir is the VM's folder (serial.log, monitor.sock, OVMF_VARS.fd).
func (v *VM) Dir() string { return v.dir }

// Since is the time since QEMU started.
func (v *VM) Since() time.Duration { return time.Since(v.start) }

// Wait is Expect for callers that handle the error themselves (several
// VMs waited for at once): it returns the time since QEMU started.
func (v *VM) Wait(re string, timeout time.Duration) (time.Duration, error) {
	_, at, err := v.expect(regexp.MustCompile(re), timeout)
	return at, err
}

// Expect waits for a console line matching re and returns it with the
// time since QEMU started. It fails the test when the timeout passes or
// QEMU exits first. Lines before the match are consumed.
func (v *VM) Expect(re string, timeout time.Duration) (string, time.Duration) {
	v.t.Helper()
	line, at, err := v.expect(regexp.MustCompile(re), timeout)
	if err != nil {
		v.t.Fatal(err)
	}
	return line, at
}

var ansi = regexp.MustCompile(`\x1b\[[0-9;?=]*[A-Za-z]|\x1bc|\r`)

func (v *VM) expect(rx *regexp.Regexp, timeout time.Duration) (string, time.Duration, error) {
	deadline := time.Now().Add(timeout)
	exited := false
	for {
		b, err := v.rd.ReadBytes('\n')
		v.part = append(v.part, b...)
		if err != nil && !errors.Is(err, io.EOF) {
			return "", 0, err
		}
		if err == nil || (exited && len(v.part) > 0) { // a whole line, or QEMU's last words
			line := ansi.ReplaceAllString(string(bytes.TrimRight(v.part, "\n")), "")
			v.part = v.part[:0]
			if v.echo {
				fmt.Fprintf(os.Stderr, "[%6.1fs] %s\n", v.Since().Seconds(), line)
			}
			if rx.MatchString(line) {
				return line, v.Since(), nil
			}
			continue
		}
		if exited {
			return "", 0, fmt.Errorf("QEMU exited (%v) after %.1fs before a console line matching %q", v.err, v.Since().Seconds(), rx)
		}
		select {
		case <-v.done:
			exited = true // read once more: what it wrote before it went
			continue
		default:
		}
		if time.Now().After(deadline) {
			return "", 0, fmt.Errorf("no console line matching %q within %s", rx, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// FindOVMF returns the UEFI firmware code and the variables template of
// Debian's ovmf package (the 4 MiB builds), found with dpkg -L.
func FindOVMF() (code, vars string, err error) {
	files := map[string]string{"OVMF_CODE_4M.fd": "", "OVMF_VARS_4M.fd": ""}
	if out, err := exec.Command("dpkg", "-L", "ovmf").Output(); err == nil {
		for _, l := range strings.Split(string(out), "\n") {
			if _, ok := files[filepath.Base(l)]; ok {
				files[filepath.Base(l)] = l
			}
		}
	}
	for name, p := range files {
		if p == "" { // not a dpkg system: the usual place
			files[name] = filepath.Join("/usr/share/OVMF", name)
		}
		if _, err := os.Stat(files[name]); err != nil {
			return "", "", fmt.Errorf("UEFI firmware %s not found (package ovmf): %w", name, err)
		}
	}
	return files["OVMF_CODE_4M.fd"], files["OVMF_VARS_4M.fd"], nil
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o644)
}

// tail is the last n lines of a file, without terminal escapes.
func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(ansi.ReplaceAllString(string(b), ""), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
