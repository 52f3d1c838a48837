// Package acc holds what the plugin's acceptance tests share. They run a
// real Packer (v1.9.5, `make packer` builds it from the Go module proxy)
// with the plugin installed offline (`make packer-plugin`), through the
// SDK's acctest helper, and only with PACKER_ACC=1: `make packer-test`
// sets it, PATH (packer), PACKER_PLUGIN_PATH and KPAAS_DEMO_BUNDLE. A plain
// `go test` skips them, in CI too: Packer's own build takes 10-30 minutes.
package acc

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/hashicorp/packer-plugin-sdk/acctest"

	"kpaas.dev/appliance/internal/testenv"
	"kpaas.dev/appliance/packer/internal/source"
)

// Require skips the test unless PACKER_ACC is set; then it needs packer
// and the given tools (missing ones fail under CI=true) and returns the
// demo bundle (KPAAS_DEMO_BUNDLE, made by make demo).
func Require(t *testing.T, tools ...string) string {
	t.Helper()
	if os.Getenv(acctest.TestEnvVar) == "" {
		t.Skipf("acceptance test: runs with %s=1 (make packer-test)", acctest.TestEnvVar)
	}
	testenv.RequireTools(t, append([]string{"packer"}, tools...)...)
	demo := os.Getenv("KPAAS_DEMO_BUNDLE")
	if demo == "" {
		t.Fatal("KPAAS_DEMO_BUNDLE is not set: run make packer-test (it names out/demo-bundle, made by make demo)")
	}
	if err := source.Check(demo); err != nil {
		t.Fatalf("KPAAS_DEMO_BUNDLE: %v (make demo writes it)", err)
	}
	if os.Getenv("PACKER_PLUGIN_PATH") == "" {
		t.Fatal("PACKER_PLUGIN_PATH is not set: make packer-plugin installs the plugin into out/packer/plugins")
	}
	return demo
}

// Example reads a template of packer/examples, escaped for acctest,
// which writes the template with fmt.Fprintf (a "%" of a shell command
// would be a verb).
func Example(t *testing.T, name string) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	b, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", "examples", name))
	if err != nil {
		t.Fatal(err)
	}
	return strings.ReplaceAll(string(b), "%", "%%")
}

// Succeeded checks that packer build exited 0; its error carries the
// log's tail.
func Succeeded(cmd *exec.Cmd, logfile string) error {
	if cmd.ProcessState != nil && cmd.ProcessState.ExitCode() == 0 {
		return nil
	}
	b, _ := os.ReadFile(logfile)
	lines := strings.Split(string(b), "\n")
	if len(lines) > 60 {
		lines = lines[len(lines)-60:]
	}
	return &BuildError{Log: strings.Join(lines, "\n")}
}

// BuildError is a failed packer build.
type BuildError struct{ Log string }

func (e *BuildError) Error() string { return "packer build failed; the log ends:\n" + e.Log }

// AgentReady is the agent's console line once it has opened the bundle
// named by lock.
func AgentReady(t *testing.T, bundle string) string {
	t.Helper()
	l, err := source.ReadLock(bundle)
	if err != nil {
		t.Fatal(err)
	}
	return `kpaas-agent .*: bundle ` + regexp.QuoteMeta(l.Name) + " " + regexp.QuoteMeta(l.Version) +
		` \(` + strconv.Itoa(len(l.Artifacts)) + ` artifacts\) ready`
}
