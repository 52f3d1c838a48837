package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"kpaas.dev/appliance/agent/journal"
	"kpaas.dev/appliance/internal/bundle"
	"kpaas.dev/appliance/internal/names"
	"kpaas.dev/appliance/internal/steps"
)

// machineRoot is a node's root with the media's bundle (one file
// artifact and its lock) and one NIC, and no cluster configuration.
func machineRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	s, err := bundle.Create(filepath.Join(root, names.BundleDir))
	if err != nil {
		t.Fatal(err)
	}
	w := s.NewWriter()
	h, n, err := w.WriteBytes([]byte("hello\n"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := bundle.FileManifest(v1.Descriptor{MediaType: "application/octet-stream", Digest: h, Size: n}, "hello", "1", "0644", "/etc/hello")
	if err != nil {
		t.Fatal(err)
	}
	mh, mn, err := w.WriteBytes(m)
	if err != nil {
		t.Fatal(err)
	}
	ref := "kpaas.local/files/hello:1"
	if err := s.SetEntries([]v1.Descriptor{bundle.Annotate(v1.Descriptor{MediaType: types.OCIManifestSchema1, Digest: mh, Size: mn}, bundle.KindFile, ref)}); err != nil {
		t.Fatal(err)
	}
	lock := &bundle.Lock{APIVersion: "kpaas.dev/v1alpha1", Kind: bundle.LockKind, Name: "demo", Version: "0.1.0",
		Artifacts: []bundle.LockArtifact{{Kind: bundle.KindFile, Ref: ref, Digest: mh.String()}}}
	b, err := lock.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.WriteFile(bundle.LockFile, b); err != nil {
		t.Fatal(err)
	}
	nic := filepath.Join(root, "sys/class/net/ens3")
	os.MkdirAll(nic, 0o755)
	os.WriteFile(filepath.Join(nic, "address"), []byte("52:54:00:aa:bb:cc\n"), 0o644)
	return root
}

func agent(ctx context.Context, root string, args ...string) (string, string, error) {
	var out, errb bytes.Buffer
	err := Run(ctx, append([]string{"--root", root}, args...), &out, &errb)
	return out.String(), errb.String(), err
}

// A machine no configuration names announces its bundle, prints its NICs
// and waits for a config disk.
func TestRunWaitsForConfig(t *testing.T) {
	root := machineRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	out, _, err := agent(ctx, root, "run")
	if err == nil {
		t.Fatal("run returned without a configuration")
	}
	for _, want := range []string{
		"kpaas-agent dev: no config disk",
		"kpaas-agent dev: bundle demo 0.1.0 (1 artifacts) ready",
		"kpaas-agent: waiting for a config disk (KPAAS-CONFIG)",
		"this machine's NICs: ens3=52:54:00:aa:bb:cc",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestStatus(t *testing.T) {
	root := machineRoot(t)
	out, _, err := agent(context.Background(), root, "status")
	if err != nil || !strings.Contains(out, "has not run on this machine") {
		t.Fatalf("status on a fresh machine: %v\n%s", err, out)
	}
	j := journal.Open(filepath.Join(root, journalFile))
	j.Node, j.Role = "cp1", "control-plane"
	j.BeginRun(time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC))
	j.Record(steps.Event{Step: "host", State: steps.Done, Duration: 2 * time.Second})
	out, _, err = agent(context.Background(), root, "status")
	if err != nil || !strings.Contains(out, "node cp1 (control-plane), run 1") || !strings.Contains(out, "host") {
		t.Errorf("status: %v\n%s", err, out)
	}
	out, _, err = agent(context.Background(), root, "status", "--json")
	if err != nil || !strings.Contains(out, `"name": "host"`) {
		t.Errorf("status --json: %v\n%s", err, out)
	}
}

func TestResetNeedsYes(t *testing.T) {
	root := machineRoot(t)
	os.MkdirAll(filepath.Join(root, names.StateDir), 0o755)
	out, _, err := agent(context.Background(), root, "reset")
	if err == nil || !strings.Contains(out, "/var/lib/etcd") {
		t.Fatalf("reset without --yes: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(root, names.StateDir)); err != nil {
		t.Errorf("reset without --yes deleted %s", names.StateDir)
	}
}

func TestSeedRefusesRemoteAddresses(t *testing.T) {
	_, _, err := agent(context.Background(), machineRoot(t), "seed", "--addr", "0.0.0.0:5000")
	if err == nil || !strings.Contains(err.Error(), "loopback only") {
		t.Errorf("err = %v", err)
	}
}

func TestUnknownCommand(t *testing.T) {
	_, _, err := agent(context.Background(), t.TempDir(), "stauts")
	if err == nil || !strings.Contains(err.Error(), "did you mean status") {
		t.Errorf("err = %v", err)
	}
}
