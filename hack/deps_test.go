// Tests of the set-up scripts: make demo installs (or names) what it needs
// before it compiles anything.
package hack_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"kpaas.dev/appliance/internal/testenv"
)

// TestDemoInstallsDepsFirst: `make demo` runs the dependency installer
// before the toolchain build.
func TestDemoInstallsDepsFirst(t *testing.T) {
	testenv.RequireTool(t, "make")
	out, err := exec.Command("make", "-C", "..", "-n", "demo").CombinedOutput()
	if err != nil {
		t.Fatalf("make -n demo: %v\n%s", err, out)
	}
	deps := strings.Index(string(out), "hack/install-deps.sh demo")
	build := strings.Index(string(out), "toolchain build")
	if deps < 0 || build < 0 || deps > build {
		t.Errorf("make -n demo does not install the dependencies before the toolchain build:\n%s", out)
	}
}

// fakeBin puts scripts named like commands first on PATH.
func fakeBin(t *testing.T, scripts map[string]string) string {
	dir := t.TempDir()
	for name, body := range scripts {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir + string(os.PathListSeparator) + os.Getenv("PATH")
}

// TestInstallDepsNamesPackagesWithoutRoot: run by another user on a
// machine that lacks the packages, the installer names them and the
// command to run, and fails.
func TestInstallDepsNamesPackagesWithoutRoot(t *testing.T) {
	path := fakeBin(t, map[string]string{
		"dpkg": "exit 1",                             // nothing is installed
		"id":   `[ "$1" = -u ] && echo 1000; exit 0`, // not root
	})
	cmd := exec.Command("bash", "install-deps.sh", "demo")
	cmd.Env = append(os.Environ(), "PATH="+path)
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("install-deps.sh succeeded without root and without the packages:\n%s", out)
	}
	for _, want := range []string{"missing Debian packages: gcc libc6-dev libseccomp-dev pkg-config binutils", "sudo apt-get install gcc"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
