package phases_test

import (
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kpaas.dev/appliance/agent/phases"
	cluster "kpaas.dev/appliance/api/cluster/v1alpha1"
	"kpaas.dev/appliance/internal/bundle"
	"kpaas.dev/appliance/internal/names"
	"kpaas.dev/appliance/internal/steps"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func (m *machine) run(list []phases.Phase) error {
	r := &steps.Runner{Progress: m.env.Progress, Observe: func(ev steps.Event) { m.env.Journal.Record(ev) }, Now: m.env.Now}
	return r.Run(context.Background(), phases.Steps(m.env, list))
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(p, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run go test -update)", err)
	}
	if string(want) != got {
		t.Errorf("%s differs (go test -update rewrites it); got:\n%s", p, got)
	}
}

// record is the golden text of a run: every command, then every file.
func (m *machine) record() string {
	return "# commands\n" + strings.Join(m.fake.Lines(), "\n") + "\n\n# files\n" + m.snapshot()
}

func newCluster() *clusterState { return &clusterState{nodes: map[string]bool{}} }

// upCluster is a cluster whose first control plane is done.
func upCluster() *clusterState {
	return &clusterState{up: true, network: true, nodes: map[string]bool{"cp1": true}}
}

func TestControlPlaneGolden(t *testing.T) {
	m := newMachine(t, "cp1", newCluster())
	if err := m.run(phases.List()); err != nil {
		t.Fatalf("%v\n%s", err, m.out)
	}
	golden(t, "control-plane.golden", m.record())
	if !strings.Contains(m.out.String(), "kpaas-agent: node cp1 (control-plane) ready: API https://10.0.0.11:6443, 1m33.5s since power-on") {
		t.Errorf("no summary line:\n%s", m.out)
	}
}

func TestWorkerGolden(t *testing.T) {
	m := newMachine(t, "w1", upCluster())
	if err := m.run(phases.List()); err != nil {
		t.Fatalf("%v\n%s", err, m.out)
	}
	golden(t, "worker.golden", m.record())
	// No private key reaches a worker, on its config disk or anywhere.
	filepath.Walk(m.root, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			b, _ := os.ReadFile(p)
			if strings.Contains(string(b), "PRIVATE KEY") {
				t.Errorf("a private key on the worker: %s", p)
			}
		}
		return nil
	})
}

// readOnly are the commands a phase may run when nothing is to be done.
var readOnly = []string{"systemctl is-active", "crictl info", "ip -o -4 addr show", "kubectl --kubeconfig /etc/kubernetes/kubelet.conf get node",
	"kubectl --kubeconfig /etc/kubernetes/admin.conf -n kube-system get"}

func TestRunTwiceIsRunOnce(t *testing.T) {
	for _, node := range []string{"cp1", "w1"} {
		t.Run(node, func(t *testing.T) {
			cs := newCluster()
			if node != "cp1" {
				cs = upCluster()
			}
			m := newMachine(t, node, cs)
			if err := m.run(phases.List()); err != nil {
				t.Fatal(err)
			}
			before := m.snapshot()
			m.fake.Reset()
			m.out.Reset()
			// Everything but preflight and ready (which run on every boot).
			list := phases.List()
			if err := m.run(list[1 : len(list)-1]); err != nil {
				t.Fatal(err)
			}
			if after := m.snapshot(); after != before {
				t.Errorf("a second run changed files")
			}
			for _, l := range m.fake.Lines() {
				if !hasPrefix(l, readOnly) {
					t.Errorf("a second run ran %q", l)
				}
			}
			if strings.Count(m.out.String(), "already done") != len(list)-2 {
				t.Errorf("second run:\n%s", m.out)
			}
		})
	}
}

func hasPrefix(s string, ps []string) bool {
	for _, p := range ps {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// A power cut after every phase: the next boot converges on the same
// machine, and kubeadm init runs once.
func TestResumeAtEveryPhaseBoundary(t *testing.T) {
	ref := newMachine(t, "cp1", newCluster())
	if err := ref.run(phases.List()); err != nil {
		t.Fatal(err)
	}
	want := ref.snapshot()
	list := phases.List()
	for k := 1; k < len(list); k++ {
		t.Run(list[k-1].Name, func(t *testing.T) {
			m := newMachine(t, "cp1", newCluster())
			if err := m.run(list[:k]); err != nil {
				t.Fatal(err)
			}
			m.powerCut()
			if err := m.run(phases.List()); err != nil {
				t.Fatalf("%v\n%s", err, m.out)
			}
			if got := m.snapshot(); got != want {
				t.Errorf("after resuming, the machine differs from an uninterrupted run")
			}
			if n := count(m.fake.Lines(), "kubeadm init"); n != 1 {
				t.Errorf("kubeadm init ran %d times", n)
			}
		})
	}
}

func count(lines []string, prefix string) int {
	n := 0
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			n++
		}
	}
	return n
}

// A power cut inside kubeadm init: the half-initialised node is reset and
// initialised again on the next boot.
func TestKubeadmInitInterrupted(t *testing.T) {
	m := newMachine(t, "cp1", newCluster())
	m.state.failNext = "kubeadm init"
	err := m.run(phases.List())
	var se *steps.StepError
	if !errors.As(err, &se) || se.Step != "kubeadm" {
		t.Fatalf("err = %v", err)
	}
	if ph, _ := m.env.Journal.Phase("kubeadm"); ph.State != steps.Failed {
		t.Errorf("journal: %+v", ph)
	}
	m.powerCut()
	m.fake.Reset()
	if err := m.run(phases.List()); err != nil {
		t.Fatalf("%v\n%s", err, m.out)
	}
	lines := m.fake.Lines()
	if count(lines, "kubeadm reset --force") != 1 || count(lines, "kubeadm init") != 1 {
		t.Errorf("commands after the interruption:\n%s", strings.Join(lines, "\n"))
	}
}

// The pod network is applied once the API server says it is ready: after
// a power cut it answers before its authoriser lets the admin in.
func TestNetworkWaitsForReadyAPIServer(t *testing.T) {
	cs := newCluster()
	cs.notReady = 20
	m := newMachine(t, "cp1", cs)
	if err := m.run(phases.List()); err != nil {
		t.Fatalf("%v\n%s", err, m.out)
	}
	lines := m.fake.Lines()
	if n := count(lines, "kubectl --kubeconfig /etc/kubernetes/admin.conf get --raw /readyz"); n != 21 {
		t.Errorf("/readyz asked %d times, want 21", n)
	}
	if n := count(lines, "kubectl --kubeconfig /etc/kubernetes/admin.conf apply --server-side --force-conflicts --field-manager kpaas-agent --validate=false -f /usr/share/kpaas/network"); n != 1 {
		t.Errorf("the pod network applied %d times, want once", n)
	}
	if strings.Contains(m.out.String(), "failed") {
		t.Errorf("a failure shown:\n%s", m.out)
	}
}

// A worker powered on before the control plane waits, then joins.
func TestWorkerBeforeControlPlane(t *testing.T) {
	cs := newCluster()
	m := newMachine(t, "w1", cs)
	done := make(chan error, 1)
	go func() { done <- m.run(phases.List()) }()
	time.Sleep(300 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("the worker finished before the control plane was up: %v", err)
	default:
	}
	cs.mu.Lock()
	cs.up, cs.network, cs.nodes["cp1"] = true, true, true
	cs.mu.Unlock()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%v\n%s", err, m.out)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the worker did not join")
	}
	if n := count(m.fake.Lines(), "kubeadm join"); n != 1 {
		t.Errorf("kubeadm join ran %d times", n)
	}
}

func TestSecretsNeverLogged(t *testing.T) {
	cp := newMachine(t, "cp1", newCluster())
	cp.state.failNext = "kubeadm init"
	cp.run(phases.List())
	cp.powerCut()
	if err := cp.run(phases.List()); err != nil {
		t.Fatal(err)
	}
	w := newMachine(t, "w1", upCluster())
	if err := w.run(phases.List()); err != nil {
		t.Fatal(err)
	}
	for _, m := range []*machine{cp, w} {
		j, _ := os.ReadFile(filepath.Join(m.root, names.StateDir, "journal.json"))
		for what, text := range map[string]string{"console": m.out.String(), "commands": strings.Join(m.fake.Lines(), "\n"), "journal": string(j)} {
			if strings.Contains(text, testToken) || strings.Contains(text, "PRIVATE KEY") {
				t.Errorf("%s of %s shows a secret", what, m.env.Node.Name)
			}
		}
		fi, err := os.Stat(filepath.Join(m.root, "/etc/kpaas/kubeadm.yaml"))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("kubeadm.yaml: %v %v", fi, err)
		}
	}
}

func TestPreflightRefusesTamperedBundle(t *testing.T) {
	m := newMachine(t, "cp1", newCluster())
	lock := filepath.Join(m.root, names.BundleDir, bundle.LockFile)
	b, _ := os.ReadFile(lock)
	os.WriteFile(lock, append(b, ' '), 0o644)
	err := m.run(phases.List())
	if err == nil || !strings.Contains(err.Error(), "refusing to install") || !strings.Contains(err.Error(), bundle.LockFile) {
		t.Fatalf("err = %v", err)
	}
	if len(m.fake.Lines()) != 0 {
		t.Errorf("commands ran after a failed preflight: %v", m.fake.Lines())
	}
}

func TestPreflightWithoutKeySaysSo(t *testing.T) {
	m := newMachine(t, "cp1", newCluster())
	m.env.PublicKey = nil
	if err := m.run(phases.List()[:1]); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(m.out.String(), "signature is NOT checked") {
		t.Errorf("output:\n%s", m.out)
	}
}

func TestPreflightHostChecks(t *testing.T) {
	m := newMachine(t, "cp1", newCluster())
	write(t, m.root, "/proc/meminfo", []byte("MemTotal:        1024000 kB\n"), 0o644)
	write(t, m.root, "/sys/devices/system/cpu/online", []byte("0\n"), 0o644)
	err := m.run(phases.List()[:1])
	if err == nil || !strings.Contains(err.Error(), "1 CPU, a control plane needs 2") || !strings.Contains(err.Error(), "a control-plane needs") {
		t.Fatalf("err = %v", err)
	}
}

func TestWorkerWithoutConfigDiskSecrets(t *testing.T) {
	m := newMachine(t, "w1", upCluster())
	os.RemoveAll(filepath.Join(m.root, names.ConfigDir, cluster.SecretsDir))
	m.env.SecretsDir = ""
	err := m.run(phases.List())
	if err == nil || !strings.Contains(err.Error(), "no config disk") {
		t.Fatalf("err = %v", err)
	}
}
