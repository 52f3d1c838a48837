package kubetest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kpaas.dev/appliance/internal/testenv"
)

// NodeName is the name the node of WithNode registers as.
const NodeName = "kubetest-node"

// WithNode also runs a node on this host: the built containerd (CRI; the
// toolchain's CNI plugins put pods on a bridge in 10.244.0.0/24, with no
// masquerade, so no iptables is needed) and kubelet, registered as
// NodeName and Ready before Start returns. Pods pull their images through
// hostsDir, containerd's registry configuration (a hosts.toml per upstream
// registry, as internal/containerd writes them for a node's seed); with no
// hostsDir, the toolchain's image layout is imported into containerd
// instead. The node changes the host (cgroups, a bridge, network
// namespaces), so it needs root and an opt-in (KUBETEST_NODE=1; always in
// CI): Start skips t otherwise. Env.StaticPods is the kubelet's static pod
// folder.
func WithNode(hostsDir string) Option {
	return func(o *options) { o.node, o.hostsDir = true, hostsDir }
}

// nodeBinaries are what a node needs besides the control plane's.
var nodeBinaries = []string{"kubelet", "containerd", "containerd-shim-runc-v2", "runc", "ctr", "crictl", "bridge", "host-local"}

// nodeAllowed skips t unless this process may start a node on this host.
func nodeAllowed(t testing.TB, o options) {
	t.Helper()
	if os.Geteuid() != 0 || (os.Getenv("KUBETEST_NODE") == "" && !testenv.InCI()) {
		t.Skip("set KUBETEST_NODE=1 and run as root to start a kubelet on this host")
	}
	if o.hostsDir == "" {
		if _, err := os.Stat(filepath.Join(imageLayout(o.binDir), "index.json")); err != nil {
			testenv.SkipOrFailf(t, "no image layout next to the binaries (run kpaas toolchain build): %v", err)
		}
	}
	// containerd puts pod cgroups below /k8s.io in every v1 hierarchy;
	// remove the (then empty) folders after everything stopped, if we
	// made them. Registered before Start's own cleanup, so it runs after.
	if _, err := os.Stat("/sys/fs/cgroup/memory/k8s.io"); os.IsNotExist(err) {
		t.Cleanup(func() { testenv.RemoveEmptyCgroups("k8s.io") })
	}
}

// imageLayout is the toolchain's image layout next to its binaries
// (toolchain.ImagesDir).
func imageLayout(binDir string) string { return filepath.Join(filepath.Dir(binDir), "oci") }

func (e *Env) startNode(o options) error {
	dir := e.Dir
	sock := filepath.Join(dir, "containerd.sock")
	cniConf := filepath.Join(dir, "cni")
	if err := os.MkdirAll(cniConf, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(cniConf, "10-kubetest.conflist"), []byte(`{
  "cniVersion": "1.0.0", "name": "kubetest",
  "plugins": [
    {"type": "bridge", "bridge": "kubetest0", "isGateway": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.0.0/24"}]]}}
  ]
}`), 0o644); err != nil {
		return err
	}
	registry := ""
	if o.hostsDir != "" {
		registry = fmt.Sprintf("[plugins.'io.containerd.cri.v1.images'.registry]\n  config_path = %q\n", o.hostsDir)
	}
	config := fmt.Sprintf(`version = 3
root = %q
state = %q
[grpc]
  address = %q
[ttrpc]
  address = %q
[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = 'registry.k8s.io/pause:3.10.1'
%s[plugins.'io.containerd.cri.v1.runtime']
  # Sandboxes get oom_score_adj -998, which needs CAP_SYS_RESOURCE; hosts
  # that drop it (this build sandbox does) fail every RunPodSandbox.
  restrict_oom_score_adj = true
[plugins.'io.containerd.cri.v1.runtime'.cni]
  bin_dirs = [%q]
  conf_dir = %q
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
  SystemdCgroup = false
`, filepath.Join(dir, "containerd-root"), filepath.Join(dir, "containerd-state"), sock, sock+".ttrpc", registry, e.BinDir, cniConf)
	if err := os.WriteFile(filepath.Join(dir, "containerd.toml"), []byte(config), 0o644); err != nil {
		return err
	}
	// containerd finds the shim, and the shim runc, on PATH.
	cmd := exec.Command(filepath.Join(e.BinDir, "containerd"), "--config", filepath.Join(dir, "containerd.toml"))
	cmd.Env = append(os.Environ(), "PATH="+e.BinDir+":"+os.Getenv("PATH"))
	if err := e.procs.Start("containerd", cmd); err != nil {
		return err
	}
	if err := e.poll(30*time.Second, func() error {
		return exec.Command(filepath.Join(e.BinDir, "ctr"), "--address", sock, "version").Run()
	}); err != nil {
		return fmt.Errorf("containerd does not answer: %w", err)
	}
	if o.hostsDir == "" {
		archive := filepath.Join(dir, "images.tar")
		if err := testenv.TarTree(imageLayout(e.BinDir), archive); err != nil {
			return err
		}
		if out, err := exec.Command(filepath.Join(e.BinDir, "ctr"), "--address", sock, "-n", "k8s.io", "images", "import", archive).CombinedOutput(); err != nil {
			return fmt.Errorf("ctr import: %w\n%s", err, out)
		}
		os.Remove(archive)
	}

	e.StaticPods = filepath.Join(dir, "manifests")
	if err := os.MkdirAll(e.StaticPods, 0o755); err != nil {
		return err
	}
	ports, err := testenv.FreePorts(2)
	if err != nil {
		return err
	}
	kubeletConfig := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: %d
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %d
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
cgroupsPerQOS: false
enforceNodeAllocatable: []
containerRuntimeEndpoint: unix://%s
staticPodPath: %s
clusterDNS: [10.96.0.10]
clusterDomain: cluster.local
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %s}
authorization: {mode: Webhook}
evictionHard: {memory.available: "1Mi", nodefs.available: "1%%", imagefs.available: "1%%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
`, ports[0], ports[1], sock, e.StaticPods, filepath.Join(dir, "pki", "ca.crt"))
	if err := os.WriteFile(filepath.Join(dir, "kubelet.yaml"), []byte(kubeletConfig), 0o644); err != nil {
		return err
	}
	e.t.Cleanup(func() { e.stopKubelet(sock) }) // runs before Start's cleanup
	if err := e.spawn("kubelet",
		"--kubeconfig="+e.Kubeconfig,
		"--config="+filepath.Join(dir, "kubelet.yaml"),
		"--root-dir="+filepath.Join(dir, "kubelet"),
		"--cert-dir="+filepath.Join(dir, "kubelet", "pki"),
		"--hostname-override="+NodeName,
		"--v=2",
	); err != nil {
		return err
	}
	return e.poll(120*time.Second, func() error {
		out, err := e.KubectlErr(nil, "get", "node", NodeName, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status} {.status.conditions[?(@.type=="Ready")].message}`)
		if err != nil {
			return err
		}
		if !strings.HasPrefix(out, "True") {
			return fmt.Errorf("node not ready: %s", out)
		}
		return nil
	})
}

// poll calls f every 200 ms until it returns nil, and returns its last
// error when timeout passes first.
func (e *Env) poll(timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// stopKubelet stops the kubelet, then removes every pod sandbox it left in
// containerd (a stopped kubelet leaves its pods running), so that stopping
// containerd afterwards leaves no shim or container behind, and detaches
// the mounts it left below its root folder.
func (e *Env) stopKubelet(sock string) {
	e.procs.Stop("kubelet")
	out, err := exec.Command(filepath.Join(e.BinDir, "crictl"), "--runtime-endpoint=unix://"+sock, "rmp", "-fa").CombinedOutput()
	if err != nil {
		e.t.Logf("crictl rmp -fa: %v\n%s", err, out)
	}
	if err := unmountUnder(filepath.Join(e.Dir, "kubelet")); err != nil {
		e.t.Errorf("kubetest: the kubelet's mounts: %v", err)
	}
}
