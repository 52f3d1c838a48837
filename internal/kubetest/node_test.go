package kubetest

import (
	"archive/tar"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kpaas.dev/appliance/internal/testenv"
)

// TestKubeletRegistersNode runs the built containerd (with CRI) and kubelet
// against a kubetest control plane: the node registers and becomes Ready, and
// a static host-network pod of the built pause image runs. It changes the
// host (cgroups, a kubelet root below the test folder), so it only runs as
// root with KUBETEST_NODE=1.
func TestKubeletRegistersNode(t *testing.T) {
	// Opt-in on a developer's machine; in CI (as root) it always runs.
	if os.Geteuid() != 0 || (os.Getenv("KUBETEST_NODE") == "" && !testenv.InCI()) {
		t.Skip("set KUBETEST_NODE=1 and run as root to start a kubelet on this host")
	}
	bin := BinDir()
	for _, b := range []string{"kubelet", "containerd", "containerd-shim-runc-v2", "runc", "ctr", "crictl", "bridge", "host-local", "portmap"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			testenv.SkipOrFailf(t, "%s not built: %v", b, err)
		}
	}
	layoutDir := filepath.Join(filepath.Dir(bin), "oci") // toolchain.ImagesDir
	if _, err := os.Stat(filepath.Join(layoutDir, "index.json")); err != nil {
		testenv.SkipOrFailf(t, "no image layout next to the binaries (run kpaas toolchain build): %v", err)
	}
	// containerd puts pod cgroups below /k8s.io in every v1 hierarchy; remove
	// the (then empty) folders after everything stopped, if we made them.
	// Registered before Start, so it runs after Start's cleanup.
	if _, err := os.Stat("/sys/fs/cgroup/memory/k8s.io"); os.IsNotExist(err) {
		t.Cleanup(func() {
			dirs, _ := filepath.Glob("/sys/fs/cgroup/*/k8s.io")
			for _, d := range dirs {
				subs, _ := filepath.Glob(d + "/*/")
				for _, sub := range subs {
					if st, err := os.Stat(sub); err == nil && st.IsDir() {
						os.Remove(sub)
					}
				}
				os.Remove(d)
			}
		})
	}
	env := Start(t, WithLogs())
	dir := env.Dir
	path := env.BinDir + ":" + os.Getenv("PATH")

	// containerd with CRI, the built CNI plugins and the built pause image.
	sock := filepath.Join(dir, "containerd.sock")
	cniConf := filepath.Join(dir, "cni")
	os.MkdirAll(cniConf, 0o755)
	os.WriteFile(filepath.Join(cniConf, "10-kubetest.conflist"), []byte(`{
  "cniVersion": "1.0.0", "name": "kubetest",
  "plugins": [
    {"type": "bridge", "bridge": "kubetest0", "isGateway": true, "ipMasq": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.0.0/24"}]]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}`), 0o644)
	config := fmt.Sprintf(`version = 3
root = %q
state = %q
[grpc]
  address = %q
[ttrpc]
  address = %q
[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = 'registry.k8s.io/pause:3.10.1'
[plugins.'io.containerd.cri.v1.runtime']
  # Sandboxes get oom_score_adj -998, which needs CAP_SYS_RESOURCE; hosts
  # that drop it (this build sandbox does) fail every RunPodSandbox.
  restrict_oom_score_adj = true
[plugins.'io.containerd.cri.v1.runtime'.cni]
  bin_dirs = [%q]
  conf_dir = %q
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
  SystemdCgroup = false
`, filepath.Join(dir, "containerd-root"), filepath.Join(dir, "containerd-state"), sock, sock+".ttrpc", env.BinDir, cniConf)
	os.WriteFile(filepath.Join(dir, "containerd.toml"), []byte(config), 0o644)
	t.Setenv("PATH", path)
	if err := env.spawn("containerd", "--config", filepath.Join(dir, "containerd.toml")); err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(dir, "images.tar")
	if err := tarTree(layoutDir, archive); err != nil {
		t.Fatal(err)
	}
	env.Eventually(30*time.Second, func() error {
		return exec.Command(filepath.Join(env.BinDir, "ctr"), "--address", sock, "version").Run()
	})
	if out, err := exec.Command(filepath.Join(env.BinDir, "ctr"), "--address", sock, "-n", "k8s.io", "images", "import", archive).CombinedOutput(); err != nil {
		t.Fatalf("ctr import: %v\n%s", err, out)
	}

	// A static pod on the host network: no pod network needed to run it.
	manifests := filepath.Join(dir, "manifests")
	os.MkdirAll(manifests, 0o755)
	os.WriteFile(filepath.Join(manifests, "pause.yaml"), []byte(`apiVersion: v1
kind: Pod
metadata:
  name: static-pause
  namespace: kube-system
spec:
  hostNetwork: true
  containers:
  - name: pause
    image: registry.k8s.io/pause:3.10.1
`), 0o644)

	ports, err := testenv.FreePorts(2)
	if err != nil {
		t.Fatal(err)
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
`, ports[0], ports[1], sock, manifests, filepath.Join(dir, "pki", "ca.crt"))
	os.WriteFile(filepath.Join(dir, "kubelet.yaml"), []byte(kubeletConfig), 0o644)
	t.Cleanup(func() { stopKubelet(t, env, sock) }) // runs before Start's cleanup
	if err := env.spawn("kubelet",
		"--kubeconfig="+env.Kubeconfig,
		"--config="+filepath.Join(dir, "kubelet.yaml"),
		"--root-dir="+filepath.Join(dir, "kubelet"),
		"--cert-dir="+filepath.Join(dir, "kubelet", "pki"),
		"--hostname-override=kubetest-node",
		"--v=2",
	); err != nil {
		t.Fatal(err)
	}

	env.Eventually(120*time.Second, func() error {
		out, err := env.KubectlErr(nil, "get", "node", "kubetest-node", "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status} {.status.conditions[?(@.type=="Ready")].message}`)
		if err != nil {
			return err
		}
		if !strings.HasPrefix(out, "True") {
			return fmt.Errorf("node not ready: %s", out)
		}
		return nil
	})
	env.Eventually(120*time.Second, func() error {
		out, err := env.KubectlErr(nil, "-n", "kube-system", "get", "pod", "static-pause-kubetest-node", "-o", "jsonpath={.status.phase}")
		if err != nil {
			return err
		}
		if out != "Running" {
			return fmt.Errorf("static pod phase %q", out)
		}
		return nil
	})
	t.Log(env.Kubectl(nil, "get", "nodes,pods", "-A", "-o", "wide"))
}

// stopKubelet stops the kubelet, then removes every pod sandbox it left in
// containerd (a stopped kubelet leaves its pods running), so that stopping
// containerd afterwards leaves no shim or container behind.
func stopKubelet(t testing.TB, e *Env, sock string) {
	e.procs.Stop("kubelet")
	out, err := exec.Command(filepath.Join(e.BinDir, "crictl"), "--runtime-endpoint=unix://"+sock, "rmp", "-fa").CombinedOutput()
	if err != nil {
		t.Logf("crictl rmp -fa: %v\n%s", err, out)
	}
}

// tarTree writes the files below dir into a tar at dest.
func tarTree(dir, dest string) error {
	f, err := os.Create(dest)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir+"/", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		st, err := os.Stat(p)
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Name: rel, Mode: 0o644, Size: st.Size(), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		_, err = io.Copy(tw, in)
		return err
	})
	if err != nil {
		return err
	}
	return tw.Close()
}
