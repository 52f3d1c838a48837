package earlyboot

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Reset undoes a failed attempt's mounts so that the boot can be retried.
func Reset() {
	for _, d := range []string{NewRoot + "/run", NewRoot + "/var", NewRoot, stateDir, roDir, mediaDir} {
		unix.Unmount(d, unix.MNT_DETACH)
	}
}

// Rescue gives the console a shell after a failed boot and returns when
// it exits (the caller then retries). With the OS image's root mounted it
// is the image's /bin/sh in a chroot (with /dev, /proc, /sys); otherwise a
// small built-in shell.
func (m *Machine) Rescue(in io.Reader, reason error) {
	m.logf("BOOT FAILED: %v", reason)
	if _, err := os.Stat(roDir + "/bin/sh"); err == nil {
		m.logf("rescue shell: the OS image's /bin/sh (chroot %s); exit to retry the boot", roDir)
		if err := chrootShell(roDir, in, m.Console); err == nil {
			return
		}
	}
	m.logf("rescue shell: built-in; type help, exit to retry the boot")
	m.builtinShell(in)
}

func chrootShell(root string, in io.Reader, out io.Writer) error {
	for _, d := range []string{"/dev", "/proc", "/sys"} {
		if err := unix.Mount(d, root+d, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return err
		}
		defer unix.Unmount(root+d, unix.MNT_DETACH)
	}
	cmd := exec.Command("/bin/sh", "-i")
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root, Setsid: true, Setctty: true}
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "TERM=linux", "PS1=kpaas-rescue# "}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = in, out, out
	return cmd.Run()
}

func (m *Machine) builtinShell(in io.Reader) {
	sc := bufio.NewScanner(in)
	out := m.Console
	for {
		fmt.Fprint(out, "kpaas-rescue> ")
		if !sc.Scan() {
			return
		}
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		arg := func(i int) string {
			if i < len(f) {
				return f[i]
			}
			return ""
		}
		var err error
		switch f[0] {
		case "help":
			fmt.Fprintln(out, "commands: blocks | ls DIR | cat FILE | dmesg | modprobe NAME | mount DEV DIR FSTYPE | reboot | poweroff | exit (retry the boot)")
		case "blocks":
			var devs []Device
			if devs, err = Scan("/sys"); err == nil {
				for i := range devs {
					if fh, e := os.Open(devs[i].Path()); e == nil {
						devs[i].FS = Probe(fh)
						fh.Close()
					}
					d := devs[i]
					fmt.Fprintf(out, "%-8s %10d MB  part=%d name=%q fs=%s label=%q\n", d.Name, d.Size>>20, d.PartN, d.PartName, d.FS.Type, d.FS.Label)
				}
			}
		case "ls":
			var ents []os.DirEntry
			if ents, err = os.ReadDir(arg(1)); err == nil {
				for _, e := range ents {
					fmt.Fprintln(out, e.Name())
				}
			}
		case "cat":
			var b []byte
			if b, err = os.ReadFile(arg(1)); err == nil {
				out.Write(b)
			}
		case "dmesg":
			buf := make([]byte, 1<<20)
			var n int
			if n, err = unix.Klogctl(unix.SYSLOG_ACTION_READ_ALL, buf); err == nil {
				out.Write(buf[:n])
			}
		case "modprobe":
			err = loadModuleByName(arg(1))
		case "mount":
			if err = os.MkdirAll(arg(2), 0o755); err == nil {
				err = unix.Mount(arg(1), arg(2), arg(3), 0, "")
			}
		case "reboot":
			unix.Sync()
			err = unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
		case "poweroff":
			unix.Sync()
			err = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
		case "exit", "retry":
			return
		default:
			err = fmt.Errorf("unknown command %q (help lists them)", f[0])
		}
		if err != nil {
			fmt.Fprintf(out, "error: %v\n", err)
		}
	}
}

func loadModuleByName(name string) error {
	var u unix.Utsname
	unix.Uname(&u)
	dir := "/lib/modules/" + unix.ByteSliceToString(u.Release[:])
	b, err := os.ReadFile(dir + "/modules.dep")
	if err != nil {
		return err
	}
	for _, l := range strings.Split(string(b), "\n") {
		p, _, _ := strings.Cut(l, ":")
		if p != "" && (strings.HasSuffix(p, "/"+name+".ko") || strings.HasSuffix(p, "/"+strings.ReplaceAll(name, "_", "-")+".ko")) {
			return loadModule(dir + "/" + p)
		}
	}
	return fmt.Errorf("module %s is not in the initramfs", name)
}
