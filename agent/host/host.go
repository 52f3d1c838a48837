// Package host is kpaas-agent's access to the machine it runs on: files
// under a root folder ("/" on a node, t.TempDir() in tests) and commands
// through the exec seam. The agent's phases touch the machine only
// through a *Host, so a test runs every phase against a folder and a fake
// runner and sees exactly what a node would get.
package host

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"kpaas.dev/appliance/internal/atomicfile"
	"kpaas.dev/appliance/internal/exec"
)

// Host is one machine.
type Host struct {
	// Root is the folder that stands for "/". Every path a method takes is
	// absolute on the machine and resolved under Root.
	Root string
	// Exec runs the machine's commands.
	Exec exec.Runner
}

// Path is p under the root.
func (h *Host) Path(p string) string { return filepath.Join(h.Root, filepath.FromSlash(p)) }

// ReadFile reads a file of the machine.
func (h *Host) ReadFile(p string) ([]byte, error) { return os.ReadFile(h.Path(p)) }

// Exists reports whether p exists.
func (h *Host) Exists(p string) bool {
	_, err := os.Lstat(h.Path(p))
	return err == nil
}

// WriteFile replaces p atomically unless it already holds data with mode,
// and reports whether it wrote.
func (h *Host) WriteFile(p string, data []byte, mode os.FileMode) (bool, error) {
	changed, err := atomicfile.Update(h.Path(p), data, mode)
	if err != nil {
		return false, fmt.Errorf("writing %s: %w", p, err)
	}
	return changed, nil
}

// Same reports whether p holds exactly data with mode.
func (h *Host) Same(p string, data []byte, mode os.FileMode) bool {
	return atomicfile.Same(h.Path(p), data, mode)
}

// Remove removes p (and everything under it); a missing p is not an error.
func (h *Host) Remove(p string) error { return os.RemoveAll(h.Path(p)) }

// Run runs a command on the machine.
func (h *Host) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	return h.Exec.Run(ctx, exec.Command(name, args...))
}

// RunCmd runs c on the machine.
func (h *Host) RunCmd(ctx context.Context, c exec.Cmd) ([]byte, error) { return h.Exec.Run(ctx, c) }

// NIC is a network interface with a hardware address.
type NIC struct {
	Name string
	MAC  string // lower case
}

// NICs lists the interfaces under /sys/class/net that have an Ethernet
// address, loopback and virtual devices without one left out, by name.
func (h *Host) NICs() ([]NIC, error) {
	dir := h.Path("/sys/class/net")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("listing network interfaces: %w", err)
	}
	var out []NIC
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "address"))
		if err != nil {
			continue
		}
		mac := strings.ToLower(strings.TrimSpace(string(b)))
		if mac == "" || mac == "00:00:00:00:00:00" || strings.Count(mac, ":") != 5 {
			continue
		}
		out = append(out, NIC{Name: e.Name(), MAC: mac})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Hostname is the kernel's host name (/proc/sys/kernel/hostname).
func (h *Host) Hostname() string {
	b, _ := h.ReadFile("/proc/sys/kernel/hostname")
	return strings.TrimSpace(string(b))
}

// Cmdline is the kernel command line.
func (h *Host) Cmdline() string {
	b, _ := h.ReadFile("/proc/cmdline")
	return strings.TrimSpace(string(b))
}

// CmdlineValue returns the value of key=value on the kernel command line.
func (h *Host) CmdlineValue(key string) string {
	for _, f := range strings.Fields(h.Cmdline()) {
		if k, v, ok := strings.Cut(f, "="); ok && k == key {
			return v
		}
	}
	return ""
}

// MemTotal is the machine's memory in bytes (/proc/meminfo).
func (h *Host) MemTotal() (int64, error) {
	b, err := h.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "MemTotal:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/meminfo: %q", sc.Text())
			}
			return kb << 10, nil
		}
	}
	return 0, errors.New("/proc/meminfo: no MemTotal")
}

// CPUs counts the online CPUs (/sys/devices/system/cpu/online, "0-3,6").
func (h *Host) CPUs() (int, error) {
	b, err := h.ReadFile("/sys/devices/system/cpu/online")
	if err != nil {
		return 0, err
	}
	n := 0
	for _, r := range strings.Split(strings.TrimSpace(string(b)), ",") {
		lo, hi, found := strings.Cut(r, "-")
		a, err1 := strconv.Atoi(lo)
		z := a
		var err2 error
		if found {
			z, err2 = strconv.Atoi(hi)
		}
		if err1 != nil || err2 != nil || z < a {
			return 0, fmt.Errorf("/sys/devices/system/cpu/online: %q", b)
		}
		n += z - a + 1
	}
	return n, nil
}

// FreeBytes is the space available to unprivileged writers at p's file
// system.
func (h *Host) FreeBytes(p string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(h.Path(p), &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", p, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// Glob lists the machine's paths matching pattern (absolute), sorted.
func (h *Host) Glob(pattern string) ([]string, error) {
	m, err := filepath.Glob(h.Path(pattern))
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(m))
	for _, p := range m {
		rel, err := filepath.Rel(h.Root, p)
		if err != nil {
			return nil, err
		}
		out = append(out, "/"+filepath.ToSlash(rel))
	}
	return out, nil
}

// IsNotExist reports whether err says a file is missing.
func IsNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
