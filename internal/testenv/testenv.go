// Package testenv decides what a test does when the machine lacks
// something it needs (a host tool, a built toolchain, a firmware file): on
// a developer's machine the test skips, saying what to install; in CI
// (CI=true, as .ci/run sets it) it fails, so a missing install step cannot
// hide behind a skip.
//
// Use it only for prerequisites that an install step provides. Conditions
// a test legitimately depends on — testing.Short(), an opt-in environment
// variable, root for a root-only test — stay plain t.Skip.
//
// It also holds what the harnesses of real components share (harness.go):
// where the built toolchain's binaries are, free loopback ports, and a
// group of long-running processes with logs (kubetest's control plane,
// harborlocal's Harbor).
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
)

// TB is what these helpers need of a test: testing.TB has it, and so does
// a command that drives test harnesses outside `go test` (the QEMU demo
// cluster).
type TB interface {
	Helper()
	Skip(args ...any)
	Fatalf(format string, args ...any)
}

// InCI reports whether the tests run in CI: CI is set to a true value
// (true, 1, …).
func InCI() bool {
	v, err := strconv.ParseBool(os.Getenv("CI"))
	return err == nil && v
}

// SkipOrFail skips t with reason, or, in CI, fails it with reason.
func SkipOrFail(t TB, reason string) {
	t.Helper()
	if InCI() {
		t.Fatalf("%s (CI=true: a missing prerequisite fails the test instead of skipping it)", reason)
	}
	t.Skip(reason)
}

// SkipOrFailf is SkipOrFail with a format.
func SkipOrFailf(t TB, format string, args ...any) {
	t.Helper()
	SkipOrFail(t, fmt.Sprintf(format, args...))
}

// debianPackage names the Debian package of the host tools the tests use.
var debianPackage = map[string]string{
	"cpio": "cpio", "fsck.vfat": "dosfstools", "mkfs.vfat": "dosfstools",
	"mdir": "mtools", "mcopy": "mtools", "mkfs.ext4": "e2fsprogs", "sfdisk": "fdisk", "fdisk": "fdisk",
	"unsquashfs": "squashfs-tools", "mksquashfs": "squashfs-tools", "qemu-img": "qemu-utils",
	"qemu-system-x86_64": "qemu-system-x86", "xorriso": "xorriso", "skopeo": "skopeo",
	"openssl": "openssl", "sha256sum": "coreutils", "tar": "tar", "make": "make",
	"mount": "mount",
}

// RequireTool returns the path of the program name, or skips t (fails it
// in CI) naming the Debian package that provides it.
func RequireTool(t TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	how := "hack/install-deps.sh installs it"
	switch pkg := debianPackage[name]; {
	case name == "go":
		how = "install Go 1.26 or newer"
	case pkg != "":
		how = "Debian package " + pkg + "; " + how
	}
	SkipOrFailf(t, "%s is not installed (%s): %v", name, how, err)
	return ""
}

// RequireTools is RequireTool for several programs.
func RequireTools(t TB, names ...string) {
	t.Helper()
	for _, n := range names {
		RequireTool(t, n)
	}
}
