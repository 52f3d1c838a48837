// Package cluster boots a site's nodes under QEMU from one media image:
// every node gets its own overlay of the image (so it keeps its state
// across power cuts and reboots) and its own config disk, and all of them
// share a closed network, a QEMU multicast segment on 127.0.0.1 with no
// route out. The first node's management NIC (cluster.yaml's
// managementMACs) is on QEMU's user network, restricted so that nothing
// leaves it, only to forward the API server to 127.0.0.1 for kubectl.
//
// The QEMU cluster tests and `make demo-cluster` both use it.
package cluster

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	v1alpha1 "kpaas.dev/appliance/api/cluster/v1alpha1"
	"kpaas.dev/appliance/builder/cli"
	"kpaas.dev/appliance/internal/testenv"
	"kpaas.dev/appliance/qemu-tests/vm"
)

// Options say what to boot.
type Options struct {
	// Image is the media's qcow2 image, the base of every overlay.
	Image string
	// Site is a `kpaas cluster init` folder: cluster.yaml and secrets/.
	// Config disks (NODE-config.img) are written there when missing.
	Site string
	// Dir holds the overlays (NODE.qcow2); an existing overlay is reused,
	// so a cluster booted again resumes.
	Dir string
	// Kubectl is the kubectl binary the host uses.
	Kubectl string
	// APIPort is the host port on 127.0.0.1 forwarded to the first
	// node's API server (0: a free one).
	APIPort int
	// WorkerNice is the niceness of the workers' QEMU (0: none). When the
	// host has fewer cores than the cluster has vCPUs, emulated workers
	// busy with a release (Harbor's migrations) can starve the control
	// plane until etcd times out and the API server restarts; a site
	// gives its control plane cores of its own. Too high, and the workers
	// crawl instead (5 in a three-node run: a worker took 20 minutes to
	// start the hello chart's pods).
	WorkerNice int
	// WorkerCPUs and WorkerMemory (MiB) size the workers (0: 1 vCPU and
	// 2 GiB). Harbor's core, job service, registry, database and Redis
	// on one worker want more than that.
	WorkerCPUs, WorkerMemory int
}

// Cluster is a site's nodes under QEMU.
type Cluster struct {
	t      vm.T
	o      Options
	Config *v1alpha1.Cluster
	mcast  string
	VMs    map[string]*vm.VM
}

// New prepares the nodes (config disks, overlays) and boots nothing.
func New(t vm.T, o Options) *Cluster {
	t.Helper()
	c, err := v1alpha1.ParseFile(filepath.Join(o.Site, v1alpha1.ClusterFile))
	if err != nil {
		t.Fatal(err)
	}
	if o.APIPort == 0 {
		o.APIPort = FreePort(t)
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cl := &Cluster{t: t, o: o, Config: c, VMs: map[string]*vm.VM{},
		mcast: fmt.Sprintf("239.255.%d.%d:%d", 1+rand.IntN(250), 1+rand.IntN(250), FreePort(t))}
	cl.prepare()
	return cl
}

// prepare writes the config disk and the overlay of every node that has
// none yet.
func (c *Cluster) prepare() {
	c.t.Helper()
	for _, n := range c.Config.Nodes {
		disk := c.ConfigDisk(n.Name)
		if _, err := os.Stat(disk); err != nil {
			Kpaas(c.t, "cluster", "config-disk", c.o.Site, "--node", n.Name, "-o", disk)
		}
		overlay := c.Overlay(n.Name)
		if _, err := os.Stat(overlay); err == nil {
			continue
		}
		if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-b", c.o.Image, "-F", "qcow2", overlay).CombinedOutput(); err != nil {
			c.t.Fatalf("qemu-img create %s: %v\n%s", overlay, err, out)
		}
	}
}

// Reread reads the site's cluster.yaml again, as an operator who added a
// node entry would, and prepares the nodes it names that have no config
// disk or overlay yet; the running nodes and their network stay.
func (c *Cluster) Reread() {
	c.t.Helper()
	cfg, err := v1alpha1.ParseFile(filepath.Join(c.o.Site, v1alpha1.ClusterFile))
	if err != nil {
		c.t.Fatal(err)
	}
	c.Config = cfg
	c.prepare()
}

// ConfigDisk is node's config disk image.
func (c *Cluster) ConfigDisk(node string) string { return filepath.Join(c.o.Site, node+"-config.img") }

// Overlay is node's disk, an overlay of the media's image.
func (c *Cluster) Overlay(node string) string { return filepath.Join(c.o.Dir, node+".qcow2") }

// Site is the site's folder (cluster.yaml, secrets, config disks).
func (c *Cluster) Site() string { return c.o.Site }

// APIPort is the host port forwarded to the API server.
func (c *Cluster) APIPort() int { return c.o.APIPort }

// Node returns the configuration's node called name.
func (c *Cluster) Node(name string) *v1alpha1.Node {
	for i := range c.Config.Nodes {
		if c.Config.Nodes[i].Name == name {
			return &c.Config.Nodes[i]
		}
	}
	c.t.Fatalf("the cluster has no node %q", name)
	return nil
}

// Boot powers node on: UEFI, its overlay and config disk, its NIC on the
// closed network; 2 CPUs and 2.5 GiB for a control plane (kubeadm's
// minimum), 2 GiB for a worker (at Options.WorkerNice; WorkerCPUs and
// WorkerMemory change that).
func (c *Cluster) Boot(name string) *vm.VM {
	c.t.Helper()
	n := c.Node(name)
	if len(n.MACs) == 0 {
		c.t.Fatalf("node %s has no MAC in the cluster configuration: the test cluster needs one", name)
	}
	opts := []vm.Option{
		vm.WithFirmware(vm.OVMF),
		vm.WithWritableDisk(c.Overlay(name), "qcow2"),
		vm.WithDisk(c.ConfigDisk(name), "raw"),
		vm.WithNIC(n.MACs[0], "socket,mcast="+c.mcast+",localaddr=127.0.0.1"),
		vm.WithMemory(2048),
	}
	if n.Role == v1alpha1.RoleControlPlane {
		opts = append(opts, vm.WithCPUs(2), vm.WithMemory(2560))
	} else {
		opts = append(opts, vm.WithNice(c.o.WorkerNice))
		if c.o.WorkerCPUs > 0 {
			opts = append(opts, vm.WithCPUs(c.o.WorkerCPUs))
		}
		if c.o.WorkerMemory > 0 {
			opts = append(opts, vm.WithMemory(c.o.WorkerMemory))
		}
	}
	if fcp := c.Config.FirstControlPlane(); fcp.Name == name && len(n.ManagementMACs) > 0 {
		opts = append(opts, vm.WithNIC(n.ManagementMACs[0],
			fmt.Sprintf("user,restrict=on,hostfwd=tcp:127.0.0.1:%d-:%d", c.o.APIPort, c.Config.ControlPlaneEndpoint.Port)))
	}
	v := vm.Start(c.t, opts...)
	c.VMs[name] = v
	return v
}

// ReadyLine is the agent's console line when node is ready.
func ReadyLine(n *v1alpha1.Node) string {
	return fmt.Sprintf(`kpaas-agent: node %s \(%s\) ready`, n.Name, n.Role)
}

// Kubeconfig writes a kubeconfig for the operator that reaches the API
// through the forwarded port, and returns its path (0600).
func (c *Cluster) Kubeconfig() string {
	c.t.Helper()
	b, err := os.ReadFile(filepath.Join(c.o.Site, v1alpha1.SecretsDir, v1alpha1.AdminKubeconfig))
	if err != nil {
		c.t.Fatal(err)
	}
	ep := c.Config.ControlPlaneEndpoint.String()
	b = bytes.ReplaceAll(b, []byte("https://"+ep), []byte(fmt.Sprintf("https://127.0.0.1:%d", c.o.APIPort)))
	p := filepath.Join(c.o.Dir, "kubeconfig")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		c.t.Fatal(err)
	}
	return p
}

// Kubectl runs kubectl as the cluster's admin through the forwarded port.
func (c *Cluster) Kubectl(stdin string, args ...string) (string, error) {
	args = append([]string{"--kubeconfig", c.Kubeconfig(), "--request-timeout", "60s"}, args...)
	cmd := exec.Command(c.o.Kubectl, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// WaitKubectl retries a kubectl command every 5 s until check accepts its
// output, and fails when timeout passes first.
func (c *Cluster) WaitKubectl(what string, timeout time.Duration, check func(string) bool, args ...string) string {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	var out string
	var err error
	for time.Now().Before(deadline) {
		out, err = c.Kubectl("", args...)
		if err == nil && check(out) {
			return out
		}
		time.Sleep(5 * time.Second)
	}
	c.t.Fatalf("%s: not after %s: %v\n%s", what, timeout, err, out)
	return ""
}

// PortForward runs `kubectl port-forward` to port of a Service (or
// another kubectl target, "svc/NAME") in namespace until the test ends,
// and returns the local port on 127.0.0.1.
func (c *Cluster) PortForward(namespace, target string, port int) int {
	c.t.Helper()
	cmd := exec.Command(c.o.Kubectl, "--kubeconfig", c.Kubeconfig(), "-n", namespace,
		"port-forward", "--address", "127.0.0.1", target, fmt.Sprintf(":%d", port))
	out, err := cmd.StdoutPipe()
	if err != nil {
		c.t.Fatal(err)
	}
	var stderr testenv.LockedBuffer // kubectl writes it while a failure reads it
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("kubectl port-forward: %v", err)
	}
	c.t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// "Forwarding from 127.0.0.1:43121 -> 8080"
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	rx := regexp.MustCompile(`^Forwarding from 127\.0\.0\.1:(\d+) `)
	timeout := time.After(2 * time.Minute)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				c.t.Fatalf("kubectl port-forward %s/%s ended: %s", namespace, target, stderr.String())
			}
			if m := rx.FindStringSubmatch(l); m != nil {
				go func() {
					for range lines { // kubectl's later lines ("Handling connection …")
					}
				}()
				p, _ := strconv.Atoi(m[1])
				return p
			}
		case <-timeout:
			c.t.Fatalf("kubectl port-forward %s/%s: no port after 2 minutes: %s", namespace, target, stderr.String())
		}
	}
}

// DialingAs is a transport whose connections to addr (host:port, an
// address of the closed network the host cannot reach) go to local
// (host:port on 127.0.0.1, e.g. a PortForward) instead, so that the
// requests keep addr as their host: what a registry's token realm and
// redirects name keeps working.
func DialingAs(addr, local string) *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	var d net.Dialer
	tr.DialContext = func(ctx context.Context, network, a string) (net.Conn, error) {
		if a == addr {
			a = local
		}
		return d.DialContext(ctx, network, a)
	}
	return tr
}

// Kpaas runs the kpaas command line in process.
func Kpaas(t vm.T, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	if err := cli.Run(context.Background(), args, nil, &out, &errb); err != nil {
		t.Fatalf("kpaas %s: %v\n%s", strings.Join(args, " "), err, errb.String())
	}
	return out.String()
}

// FreePort is a free TCP port on 127.0.0.1.
func FreePort(t vm.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
