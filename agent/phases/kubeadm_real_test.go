package phases_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"kpaas.dev/appliance/agent/phases"
	"kpaas.dev/appliance/internal/testenv"
)

// The first control plane's kubeadm configuration and patches, as the
// agent writes them, given to the real kubeadm of the toolchain: the
// static pods it writes for the API server, the controller manager, the
// scheduler and etcd carry the patched liveness probes (and kubeadm's own
// startup probes): the API server's leaves out etcd's check and keeps
// kubeadm's address, port and scheme; etcd runs with the raft timing of
// the cluster configuration, the API server gives etcd's health checks
// 60 s (/healthz) and 10 s (/readyz), the controller manager and the
// scheduler hold their leader lease 137 s, and the readiness probes kubeadm
// gives the API server, etcd and the scheduler run every 10 s (the
// controller manager still has none).
func TestRealKubeadmTakesTheControlPlaneFiles(t *testing.T) {
	kubeadm := filepath.Join(testenv.ToolchainBin(), "kubeadm")
	if _, err := os.Stat(kubeadm); err != nil {
		testenv.SkipOrFailf(t, "kubeadm not in %s: build the toolchain first (make toolchain)", testenv.ToolchainBin())
	}
	if os.Getuid() != 0 {
		t.Skip("kubeadm --rootfs chroots into the machine's folder: root only")
	}
	m := newMachine(t, "cp1", newCluster())
	if err := m.run(phases.List()); err != nil {
		t.Fatalf("%v\n%s", err, m.out)
	}
	for _, ph := range [][]string{{"control-plane", "all"}, {"etcd", "local"}} {
		args := append(append([]string{"init", "phase"}, ph...), "--config", "/etc/kpaas/kubeadm.yaml", "--rootfs", m.root)
		out, err := exec.Command(kubeadm, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("kubeadm %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		if !strings.Contains(string(out), "Applied patch of type") {
			t.Errorf("kubeadm %s applied no patch:\n%s", strings.Join(ph, " "), out)
		}
		// kubeadm decodes every document of the file (the kubelet's and
		// kube-proxy's configurations too) strictly, and warns of a field
		// it does not know.
		if bad := regexp.MustCompile(`(?i)unknown field|strict decoding|duplicate field`).Find(out); bad != nil {
			t.Errorf("kubeadm %s: %q in its output:\n%s", strings.Join(ph, " "), bad, out)
		}
	}
	type request struct{ Host, Path, Scheme string }
	for _, want := range []struct {
		container string
		liveness  request  // the liveness probe's request after the patch
		readiness *request // kubeadm's readiness probe's request, kept
		flags     []string // on the command line
	}{
		{"kube-apiserver", request{"10.0.0.11", "/livez?exclude=etcd", "HTTPS"}, &request{"10.0.0.11", "/readyz", "HTTPS"}, []string{"--etcd-healthcheck-timeout=60s", "--etcd-readycheck-timeout=10s"}},
		{"etcd", request{"127.0.0.1", "/livez", "HTTP"}, &request{"127.0.0.1", "/readyz", "HTTP"}, []string{"--heartbeat-interval=250", "--election-timeout=5000"}},
		{"kube-controller-manager", request{"127.0.0.1", "/healthz", "HTTPS"}, nil, []string{"--leader-elect-lease-duration=137s", "--leader-elect-renew-deadline=107s", "--leader-elect-retry-period=26s"}},
		{"kube-scheduler", request{"127.0.0.1", "/livez", "HTTPS"}, &request{"127.0.0.1", "/readyz", "HTTPS"}, []string{"--leader-elect-lease-duration=137s", "--leader-elect-renew-deadline=107s", "--leader-elect-retry-period=26s"}},
	} {
		c := want.container
		b, err := os.ReadFile(filepath.Join(m.root, "etc/kubernetes/manifests", c+".yaml"))
		if err != nil {
			t.Fatal(err)
		}
		type probe struct {
			FailureThreshold, PeriodSeconds int
			HTTPGet                         request `json:"httpGet"`
		}
		var pod struct {
			Spec struct {
				Containers []struct {
					Name                                        string
					Command                                     []string
					LivenessProbe, StartupProbe, ReadinessProbe *probe
				}
			}
		}
		if err := yaml.Unmarshal(b, &pod); err != nil || len(pod.Spec.Containers) != 1 {
			t.Fatalf("%s.yaml: %v\n%s", c, err, b)
		}
		ct := pod.Spec.Containers[0]
		if ct.Name != c || ct.LivenessProbe == nil || ct.LivenessProbe.FailureThreshold != 30 || ct.LivenessProbe.PeriodSeconds != 10 {
			t.Errorf("%s: container %s, liveness probe %+v: want 30 failures 10 s apart", c, ct.Name, ct.LivenessProbe)
		}
		if ct.LivenessProbe != nil && ct.LivenessProbe.HTTPGet != want.liveness {
			t.Errorf("%s: liveness probe's request %+v, want %+v", c, ct.LivenessProbe.HTTPGet, want.liveness)
		}
		switch r := ct.ReadinessProbe; {
		case want.readiness == nil && r != nil:
			t.Errorf("%s: readiness probe %+v: want none", c, r)
		case want.readiness != nil && (r == nil || r.PeriodSeconds != 10 || r.FailureThreshold != 3 || r.HTTPGet != *want.readiness):
			t.Errorf("%s: readiness probe %+v: want kubeadm's %+v (3 failures) every 10 s", c, r, *want.readiness)
		}
		for _, f := range want.flags {
			if !slices.Contains(ct.Command, f) {
				t.Errorf("%s.yaml: no %s in %q", c, f, ct.Command)
			}
		}
		// kubeadm's startup probe follows controlPlaneComponentHealthCheck
		// (20 minutes in the agent's configuration).
		if ct.StartupProbe == nil || ct.StartupProbe.FailureThreshold != 120 {
			t.Errorf("%s: startup probe %+v: want 120 failures (20 minutes)", c, ct.StartupProbe)
		}
	}
}
