//go:build qemu

package qemutests

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"kpaas.dev/appliance/builder/bake"
	"kpaas.dev/appliance/builder/cli"
	"kpaas.dev/appliance/builder/disk"
	"kpaas.dev/appliance/builder/image"
	"kpaas.dev/appliance/internal/bundle"
	"kpaas.dev/appliance/internal/progress"
	"kpaas.dev/appliance/qemu-tests/vm"
)

// The cluster scenarios boot nodes from one qcow2 image (per-node
// overlays) with per-node config disks, on a closed network: a QEMU
// multicast segment on 127.0.0.1 with no route out. The first control
// plane has a second NIC on QEMU's user network (restricted: no
// connection leaves it) only to forward the API to 127.0.0.1 for kubectl.
//
// E2EEnv=1 runs every scenario (make e2e); without it only the scenario
// CI runs.
const E2EEnv = "KPAAS_E2E"

// clusterTimeout bounds a node's way from power-on to ready under
// software emulation.
const clusterTimeout = 40 * time.Minute

// nodeSpec is one node of a test cluster.
type nodeSpec struct {
	name, role string
	n          int // 11, 21, 22: the last octet of its address and MAC
}

func (n nodeSpec) mac() string     { return fmt.Sprintf("52:54:00:4b:00:%02x", n.n) }
func (n nodeSpec) mgmtMAC() string { return fmt.Sprintf("52:54:00:4b:01:%02x", n.n) }
func (n nodeSpec) addr() string    { return fmt.Sprintf("10.42.0.%d", n.n) }

// clusterMedia is what every cluster scenario boots: the demo bundle's
// qcow2 image and a site folder (cluster.yaml and secrets).
type clusterMedia struct {
	dir, qcow2, kubectl string
}

var clusterOnce struct {
	sync.Mutex
	m *clusterMedia
}

// demoMedia bakes bundles/demo.yaml (toolchain from out/mirror, the OS
// image, the demo workload) signed with a fresh key, and writes its qcow2
// image with the key on the ESP, as `make demo` does.
func demoMedia(t *testing.T) *clusterMedia {
	t.Helper()
	clusterOnce.Lock()
	defer clusterOnce.Unlock()
	if clusterOnce.m != nil {
		return clusterOnce.m
	}
	toolchain, _ := filepath.Abs("../out/mirror")
	kubectl := filepath.Join(toolchain, "files", "kubectl")
	if _, err := os.Stat(kubectl); err != nil {
		t.Fatalf("the toolchain mirror is not built (%v): make toolchain", err)
	}
	osDir, _ := filepath.Abs("../out/os")
	if _, err := os.Stat(filepath.Join(osDir, "index.json")); err != nil {
		osDir = osImage(t)
	}
	dir, err := os.MkdirTemp("", "kpaas-qemu-cluster-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() && vm.Keep() {
			t.Logf("%s: kept %s", vm.KeepEnv, dir)
			return
		}
	})
	demoMirror := filepath.Join(dir, "demo-mirror")
	if out, err := exec.Command("go", "run", "../bundles/demo/mkmirror", "-o", demoMirror).CombinedOutput(); err != nil {
		t.Fatalf("mkmirror: %v\n%s", err, out)
	}
	pub, err := bundle.GenerateKey(filepath.Join(dir, "demo.key"), filepath.Join(dir, "demo.pub"))
	if err != nil {
		t.Fatal(err)
	}
	priv, err := bundle.LoadPrivateKey(filepath.Join(dir, "demo.key"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	log := progress.New(testWriter{t})
	bdir := filepath.Join(dir, "bundle")
	start := time.Now()
	manifest, _ := filepath.Abs("../bundles/demo.yaml")
	if _, err := bake.Bake(ctx, bake.Options{Manifest: manifest, Out: bdir, Mirrors: []string{toolchain, osDir, demoMirror},
		Offline: true, SignKey: priv, Progress: log}); err != nil {
		t.Fatalf("bake: %v", err)
	}
	t.Logf("demo bundle baked in %s", time.Since(start).Round(time.Second))
	start = time.Now()
	sum, err := image.Build(ctx, image.Options{Bundle: bdir, Out: filepath.Join(dir, "node"), PublicKey: pub,
		Formats: []disk.Format{disk.QCOW2}, DiskSize: 12 << 30, Progress: log})
	if err != nil {
		t.Fatalf("image build: %v", err)
	}
	t.Logf("qcow2 written in %s", time.Since(start).Round(time.Second))
	clusterOnce.m = &clusterMedia{dir: dir, qcow2: sum.Outputs[0].Path, kubectl: kubectl}
	return clusterOnce.m
}

// cluster is a running test cluster.
type cluster struct {
	t       *testing.T
	media   *clusterMedia
	site    string // the `kpaas cluster init` folder
	nodes   []nodeSpec
	vms     map[string]*vm.VM
	disks   map[string]string // node → its overlay
	apiPort int
	mcast   string
}

// newCluster writes a site for nodes (cluster init, one config disk per
// node, one overlay per node) without booting anything.
func newCluster(t *testing.T, nodes ...nodeSpec) *cluster {
	t.Helper()
	m := demoMedia(t)
	dir := vm.Dir(t)
	c := &cluster{t: t, media: m, site: filepath.Join(dir, "site"), nodes: nodes, vms: map[string]*vm.VM{}, disks: map[string]string{},
		apiPort: freePort(t), mcast: fmt.Sprintf("239.255.42.%d:%d", 1+time.Now().Nanosecond()%200, freePort(t))}
	var y strings.Builder
	fmt.Fprintf(&y, "apiVersion: kpaas.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: demo\ncontrolPlaneEndpoint:\n  host: %s\nnodes:\n", nodes[0].addr())
	for _, n := range nodes {
		fmt.Fprintf(&y, "  - name: %s\n    role: %s\n    macs: [%q]\n    address: %s/24\n", n.name, n.role, n.mac(), n.addr())
		if n.role == "control-plane" {
			fmt.Fprintf(&y, "    managementMACs: [%q]\n", n.mgmtMAC())
		}
	}
	src := filepath.Join(dir, "cluster.yaml")
	if err := os.WriteFile(src, []byte(y.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	kpaas(t, "cluster", "init", "--from", src, "-o", c.site)
	for _, n := range nodes {
		kpaas(t, "cluster", "config-disk", c.site, "--node", n.name, "-o", filepath.Join(dir, n.name+"-config.img"))
		overlay := filepath.Join(dir, n.name+".qcow2")
		if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-b", m.qcow2, "-F", "qcow2", overlay).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img create: %v\n%s", err, out)
		}
		c.disks[n.name] = overlay
	}
	return c
}

func kpaas(t *testing.T, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	if err := cli.Run(context.Background(), args, nil, &out, &errb); err != nil {
		t.Fatalf("kpaas %s: %v\n%s", strings.Join(args, " "), err, errb.String())
	}
	return out.String()
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// boot powers a node on.
func (c *cluster) boot(n nodeSpec) *vm.VM {
	c.t.Helper()
	dir := filepath.Dir(c.disks[n.name])
	opts := []vm.Option{
		vm.WithFirmware(vm.OVMF),
		vm.WithWritableDisk(c.disks[n.name], "qcow2"),
		vm.WithDisk(filepath.Join(dir, n.name+"-config.img"), "raw"),
		vm.WithNIC(n.mac(), "socket,mcast="+c.mcast+",localaddr=127.0.0.1"),
		vm.WithMemory(2048),
	}
	if n.role == "control-plane" {
		opts = append(opts, vm.WithCPUs(2), vm.WithMemory(2560))
	}
	if n == c.nodes[0] {
		opts = append(opts, vm.WithNIC(n.mgmtMAC(), fmt.Sprintf("user,restrict=on,hostfwd=tcp:127.0.0.1:%d-:6443", c.apiPort)))
	}
	v := vm.Start(c.t, opts...)
	c.vms[n.name] = v
	return v
}

// kubectl runs the toolchain's kubectl against the cluster as its admin,
// through the forwarded API port.
func (c *cluster) kubectl(stdin string, args ...string) (string, error) {
	args = append([]string{"--kubeconfig", filepath.Join(c.site, "secrets", "admin.conf"),
		"--server", fmt.Sprintf("https://127.0.0.1:%d", c.apiPort), "--request-timeout", "60s"}, args...)
	cmd := exec.Command(c.media.kubectl, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// waitKubectl retries a kubectl command until check accepts its output.
func (c *cluster) waitKubectl(what string, timeout time.Duration, check func(string) bool, args ...string) string {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	var out string
	var err error
	for time.Now().Before(deadline) {
		out, err = c.kubectl("", args...)
		if err == nil && check(out) {
			return out
		}
		time.Sleep(5 * time.Second)
	}
	c.t.Fatalf("%s: not after %s: %v\n%s", what, timeout, err, out)
	return ""
}

func readyLine(n nodeSpec) string {
	return fmt.Sprintf(`kpaas-agent: node %s \(%s\) ready`, n.name, n.role)
}

func e2e(t *testing.T) {
	if os.Getenv(E2EEnv) == "" {
		t.Skipf("an e2e scenario: %s=1 (make e2e) runs it", E2EEnv)
	}
}

// TestClusterControlPlaneAndWorker is the scenario CI runs: a control
// plane and a worker form one cluster from the media, offline; a pod runs
// on the worker from an image that exists only in the bundle and reaches a
// service backed by a pod on the control plane by its DNS name.
func TestClusterControlPlaneAndWorker(t *testing.T) {
	cp := nodeSpec{"cp1", "control-plane", 11}
	w := nodeSpec{"w1", "worker", 21}
	c := newCluster(t, cp, w)
	// The worker first: it waits for the control plane.
	wv := c.boot(w)
	cv := c.boot(cp)
	_, cpAt := cv.Expect(readyLine(cp), clusterTimeout)
	t.Logf("%s ready %s after power-on", cp.name, cpAt.Round(time.Second))
	_, wAt := wv.Expect(readyLine(w), clusterTimeout)
	t.Logf("%s ready %s after power-on", w.name, wAt.Round(time.Second))
	c.checkNodesReady()
	c.checkWorkload(cp, w)
}

// checkNodesReady asks the API whether every node is Ready.
func (c *cluster) checkNodesReady() {
	c.waitKubectl("every node Ready", 10*time.Minute, func(out string) bool {
		var list struct {
			Items []struct {
				Metadata struct{ Name string }
				Status   struct {
					Conditions []struct{ Type, Status string }
				}
			}
		}
		if json.Unmarshal([]byte(out), &list) != nil || len(list.Items) != len(c.nodes) {
			return false
		}
		for _, it := range list.Items {
			ready := false
			for _, cd := range it.Status.Conditions {
				ready = ready || cd.Type == "Ready" && cd.Status == "True"
			}
			if !ready {
				return false
			}
		}
		return true
	}, "get", "nodes", "-o", "json")
}

// checkWorkload runs hello on server (behind a Service) and its probe on
// client: the image comes only from the bundle (through the node's seed),
// the probe crosses nodes and resolves the Service by DNS.
func (c *cluster) checkWorkload(server, client nodeSpec) {
	c.t.Helper()
	manifest := fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: hello, namespace: default, labels: {app: hello}}
spec:
  nodeName: %s
  tolerations: [{operator: Exists}]
  containers: [{name: hello, image: docker.io/kpaas/hello:0.1.0, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: hello, namespace: default}
spec:
  selector: {app: hello}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: probe, namespace: default}
spec:
  nodeName: %s
  restartPolicy: OnFailure
  containers: [{name: probe, image: docker.io/kpaas/hello-probe:0.1.0, args: ["-probe", "http://hello.default.svc.cluster.local/"]}]
`, server.name, client.name)
	if out, err := c.kubectl(manifest, "apply", "-f", "-"); err != nil {
		c.t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
	c.waitKubectl("the probe pod succeeded", 15*time.Minute, func(out string) bool { return strings.TrimSpace(out) == "Succeeded" },
		"get", "pod", "probe", "-o", "jsonpath={.status.phase}")
	out, _ := c.kubectl("", "get", "pods", "-o", "wide")
	c.t.Logf("pods:\n%s", out)
}
