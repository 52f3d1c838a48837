package phases_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"

	"kpaas.dev/appliance/agent/host"
	"kpaas.dev/appliance/agent/journal"
	"kpaas.dev/appliance/agent/phases"
	cluster "kpaas.dev/appliance/api/cluster/v1alpha1"
	"kpaas.dev/appliance/internal/bundle"
	"kpaas.dev/appliance/internal/clustersecrets"
	"kpaas.dev/appliance/internal/exec"
	"kpaas.dev/appliance/internal/exec/exectest"
	"kpaas.dev/appliance/internal/names"
	"kpaas.dev/appliance/internal/progress"
)

// testToken is the bootstrap token of the test cluster (the goldens name
// it; nothing else in them is secret).
const testToken = "abcdef.0123456789abcdef"

const siteYAML = `apiVersion: kpaas.dev/v1alpha1
kind: Cluster
metadata:
  name: site
controlPlaneEndpoint:
  host: 10.0.0.11
nodes:
  - name: cp1
    role: control-plane
    macs: ["52:54:00:00:00:01"]
    address: 10.0.0.11/24
  - name: cp2
    role: control-plane
    macs: ["52:54:00:00:00:03"]
    address: 10.0.0.12/24
  - name: w1
    role: worker
    macs: ["52:54:00:00:00:02"]
    address: 10.0.0.21/24
    dns: [10.0.0.1]
    gateway: 10.0.0.1
`

var images = []string{
	"registry.k8s.io/pause:3.10.1",
	"registry.k8s.io/etcd:3.6.16-0",
	"registry.k8s.io/coredns/coredns:v1.14.7",
	"docker.io/cloudnativelabs/kube-router:v2.1.0",
}

// shared holds what every machine of a test shares: one bundle and one
// set of secrets, made once (RSA keys are slow).
var shared struct {
	once    sync.Once
	dir     string
	secrets string
	pub     []byte
	err     error
}

func setupShared() {
	dir, err := os.MkdirTemp("", "kpaas-phases-")
	if err != nil {
		shared.err = err
		return
	}
	shared.dir = dir
	shared.err = func() error {
		bdir := filepath.Join(dir, "bundle")
		s, err := bundle.Create(bdir)
		if err != nil {
			return err
		}
		w := s.NewWriter()
		var ds []v1.Descriptor
		lock := &bundle.Lock{APIVersion: "kpaas.dev/v1alpha1", Kind: bundle.LockKind, Name: "test", Version: "1.0.0", KubernetesVersion: "v1.35.4"}
		for _, ref := range images {
			img, err := random.Image(64, 1)
			if err != nil {
				return err
			}
			d, err := w.WriteImage(context.Background(), img)
			if err != nil {
				return err
			}
			ds = append(ds, bundle.Annotate(d, bundle.KindImage, ref))
			lock.Artifacts = append(lock.Artifacts, bundle.LockArtifact{Kind: bundle.KindImage, Ref: ref, Digest: d.Digest.String()})
		}
		if err := s.SetEntries(ds); err != nil {
			return err
		}
		lb, err := lock.Marshal()
		if err != nil {
			return err
		}
		if _, err := s.WriteFile(bundle.LockFile, lb); err != nil {
			return err
		}
		if err := s.WriteSums(); err != nil {
			return err
		}
		if _, err := bundle.GenerateKey(filepath.Join(dir, "k.key"), filepath.Join(dir, "k.pub")); err != nil {
			return err
		}
		priv, err := bundle.LoadPrivateKey(filepath.Join(dir, "k.key"))
		if err != nil {
			return err
		}
		if err := s.Sign(priv); err != nil {
			return err
		}
		if shared.pub, err = os.ReadFile(filepath.Join(dir, "k.pub")); err != nil {
			return err
		}
		c, err := cluster.Parse("site.yaml", []byte(siteYAML))
		if err != nil {
			return err
		}
		shared.secrets = filepath.Join(dir, "site")
		if err := clustersecrets.Generate(shared.secrets, c, time.Now()); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(shared.secrets, cluster.SecretsDir, cluster.Token), []byte(testToken+"\n"), 0o600)
	}()
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

// machine is a node under test: a root folder laid out like a booted
// node, and a fake runner that behaves like the node's commands (systemctl
// starts and reports services, kubeadm writes its files, kubectl answers
// from what happened), so phases see their postconditions come true.
type machine struct {
	t     *testing.T
	root  string
	fake  *exectest.Fake
	env   *phases.Env
	out   *bytes.Buffer
	state *state
}

// state is the fake machine's running state, which a power cut loses
// (services stop) while the root folder stays.
type state struct {
	mu      sync.Mutex
	active  map[string]bool
	addrUp  bool
	applied bool // the pod network was applied (by the first control plane)
	// clusterUp says the API answers; shared by a test's machines.
	cluster *clusterState
	// failNext makes the next command with this prefix fail once.
	failNext string
	// execFails: kubectl exec does not reach a pod (the API without its
	// quorum, or a slow node).
	execFails bool
}

type clusterState struct {
	mu      sync.Mutex
	up      bool
	network bool
	nodes   map[string]bool
	// notReady is how many more times the API server, up, says it is not
	// ready yet (after a power cut): /readyz fails and it refuses even
	// the admin's requests, as a real one does before its caches fill.
	notReady int
	// etcd is the etcd cluster's members beyond the first control plane's
	// ("learner" or "voting"), labelled the nodes labelled control planes.
	etcd     map[string]string
	labelled map[string]bool
	// joinFails makes a further control plane's `kubeadm join` stop as
	// kubeadm 1.35 does on a slow machine: "learner" after adding the
	// learner (its promotion refused: not in sync), "voting" after
	// promoting it (the promotion timed out in the client, then every
	// retry was refused: "can only promote a learner member").
	joinFails string
	// etcdSilent makes every etcdctl fail (no quorum, no container).
	etcdSilent bool
}

func newMachine(t *testing.T, node string, cs *clusterState) *machine {
	t.Helper()
	shared.once.Do(setupShared)
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	root := t.TempDir()
	m := &machine{t: t, root: root, fake: &exectest.Fake{}, out: &bytes.Buffer{}, state: &state{active: map[string]bool{}, cluster: cs}}
	c, err := cluster.Parse("site.yaml", []byte(siteYAML))
	if err != nil {
		t.Fatal(err)
	}
	var n *cluster.Node
	for i := range c.Nodes {
		if c.Nodes[i].Name == node {
			n = &c.Nodes[i]
		}
	}
	// The media: bundle, key, config disk with the role's secrets.
	copyTree(t, filepath.Join(shared.dir, "bundle"), filepath.Join(root, names.BundleDir))
	write(t, root, filepath.Join(names.ESPDir, names.ESPPublicKey), shared.pub, 0o644)
	write(t, root, filepath.Join(names.ConfigDir, cluster.ClusterFile), []byte(siteYAML), 0o644)
	for _, s := range clustersecrets.ForRole(n.Role) {
		b, err := os.ReadFile(filepath.Join(shared.secrets, cluster.SecretsDir, s))
		if err != nil {
			t.Fatal(err)
		}
		write(t, root, filepath.Join(names.ConfigDir, cluster.SecretsDir, s), b, 0o600)
	}
	// The root file system's files from the bundle.
	write(t, root, "/opt/cni/kpaas/cni-plugins-linux-amd64-v1.9.1.tgz", cniTarball(t), 0o644)
	write(t, root, phases.NetworkManifests+"/kube-router.yaml", []byte("kind: DaemonSet\n"), 0o644)
	// The kernel's view.
	write(t, root, "/sys/class/net/lo/address", []byte("00:00:00:00:00:00\n"), 0o644)
	write(t, root, "/sys/class/net/ens3/address", []byte(n.MACs[0]+"\n"), 0o644)
	write(t, root, "/proc/meminfo", []byte("MemTotal:        4028440 kB\n"), 0o644)
	write(t, root, "/sys/devices/system/cpu/online", []byte("0-1\n"), 0o644)
	write(t, root, "/proc/sys/kernel/hostname", []byte("debian\n"), 0o644)
	write(t, root, "/proc/swaps", []byte("Filename\tType\tSize\tUsed\tPriority\n/dev/vda9 partition 1024 0 -2\n"), 0o644)
	write(t, root, "/proc/uptime", []byte("93.52 80.00\n"), 0o644)
	os.MkdirAll(filepath.Join(root, "/var"), 0o755)

	store, err := bundle.Open(filepath.Join(root, names.BundleDir))
	if err != nil {
		t.Fatal(err)
	}
	lock, err := store.ReadLock()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := bundle.LoadPublicKey(filepath.Join(root, names.ESPDir, names.ESPPublicKey))
	if err != nil {
		t.Fatal(err)
	}
	h := &host.Host{Root: root, Exec: m.fake}
	m.env = &phases.Env{
		Host: h, Bundle: store, Lock: lock, PublicKey: pub, Cluster: c, Node: n, NIC: "ens3",
		SecretsDir:  filepath.Join(names.ConfigDir, cluster.SecretsDir),
		AgentBinary: "/usr/bin/kpaas-agent", Progress: progress.New(m.out, progress.Terminal(false)),
		Probe: m.probe, Dial: m.dial,
		Now:     func() time.Time { return time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC) },
		Journal: journal.Open(filepath.Join(root, names.StateDir, "journal.json")),
		Wait:    0.0001,
		MaxRSS:  func() int64 { return 30720 },
	}
	m.script()
	m.kubeRouter()
	return m
}

// kubeRouter plays the pod network's DaemonSet pod on this machine: once
// the network is applied and the node joined, it adds the node's pod CIDR
// to the CNI configuration, as kube-router does.
func (m *machine) kubeRouter() {
	stop := make(chan struct{})
	done := make(chan struct{})
	m.t.Cleanup(func() { close(stop); <-done })
	conf := filepath.Join(m.root, "/etc/cni/net.d/10-kuberouter.conflist")
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			cs := m.state.cluster
			cs.mu.Lock()
			on := cs.network && cs.nodes[m.env.Node.Name]
			cs.mu.Unlock()
			if !on {
				continue
			}
			if b, err := os.ReadFile(conf); err == nil && !strings.Contains(string(b), "10.233.") {
				b = []byte(strings.Replace(string(b), `"ipam": { "type": "host-local" }`, `"ipam": { "type": "host-local", "ranges": [[{"subnet": "10.233.64.0/24"}]] }`, 1))
				os.WriteFile(conf+".new", b, 0o644)
				os.Rename(conf+".new", conf)
			}
		}
	}()
}

func (m *machine) probe(ctx context.Context, url string) error {
	m.state.mu.Lock()
	defer m.state.mu.Unlock()
	if !m.state.active[phases.SeedUnitName] {
		return fmt.Errorf("GET %s: connection refused", url)
	}
	return nil
}

func (m *machine) dial(ctx context.Context, addr string) error {
	m.state.cluster.mu.Lock()
	defer m.state.cluster.mu.Unlock()
	if !m.state.cluster.up {
		return fmt.Errorf("dial tcp %s: connection refused", addr)
	}
	return nil
}

// powerCut loses the running state: services stop, the address goes.
func (m *machine) powerCut() {
	m.state.mu.Lock()
	defer m.state.mu.Unlock()
	m.state.active = map[string]bool{}
	m.state.addrUp = false
	write(m.t, m.root, "/proc/sys/kernel/hostname", []byte("debian\n"), 0o644)
	write(m.t, m.root, "/proc/swaps", []byte("Filename\tType\tSize\tUsed\tPriority\n/dev/vda9 partition 1024 0 -2\n"), 0o644)
	os.RemoveAll(filepath.Join(m.root, "/sys/module"))
}

func (m *machine) script() {
	f, st, root, node := m.fake, m.state, m.root, m.env.Node.Name
	ok := exectest.Response{}
	fail := exectest.Response{ExitCode: 1, Stderr: "not so"}
	failing := func(c exec.Cmd) bool {
		st.mu.Lock()
		defer st.mu.Unlock()
		if st.failNext != "" && strings.HasPrefix(lineOf(c), st.failNext) {
			st.failNext = ""
			return true
		}
		return false
	}
	f.On("", func(c exec.Cmd) exectest.Response {
		if failing(c) {
			return exectest.Response{ExitCode: 1, Stderr: "injected failure"}
		}
		return ok
	})
	f.On("hostname ", func(c exec.Cmd) exectest.Response {
		write(m.t, root, "/proc/sys/kernel/hostname", []byte(c.Args[0]+"\n"), 0o644)
		return ok
	})
	f.On("modprobe ", func(c exec.Cmd) exectest.Response {
		for _, mod := range c.Args[1:] {
			os.MkdirAll(filepath.Join(root, "sys/module", mod), 0o755)
		}
		return ok
	})
	f.On("swapoff -a", func(exec.Cmd) exectest.Response {
		write(m.t, root, "/proc/swaps", []byte("Filename\tType\tSize\tUsed\tPriority\n"), 0o644)
		return ok
	})
	f.On("networkctl reconfigure", func(exec.Cmd) exectest.Response {
		st.mu.Lock()
		st.addrUp = true
		st.mu.Unlock()
		return ok
	})
	f.On("ip -o -4 addr show", func(exec.Cmd) exectest.Response {
		st.mu.Lock()
		defer st.mu.Unlock()
		if !st.addrUp {
			return exectest.Response{Stdout: "2: ens3    inet6 fe80::1/64 scope link\n"}
		}
		return exectest.Response{Stdout: "2: ens3    inet " + m.env.Node.Address + " brd 10.0.0.255 scope global ens3\n"}
	})
	start := func(c exec.Cmd) exectest.Response {
		if failing(c) {
			return fail
		}
		st.mu.Lock()
		for _, u := range c.Args[1:] {
			st.active[u] = true
		}
		st.mu.Unlock()
		return ok
	}
	f.On("systemctl start", start)
	f.On("systemctl restart", start)
	f.On("systemctl is-active", func(c exec.Cmd) exectest.Response {
		st.mu.Lock()
		defer st.mu.Unlock()
		if st.active[c.Args[len(c.Args)-1]] {
			return ok
		}
		return exectest.Response{ExitCode: 3}
	})
	f.On("crictl info", func(exec.Cmd) exectest.Response {
		st.mu.Lock()
		defer st.mu.Unlock()
		if st.active["containerd"] {
			return exectest.Response{Stdout: "{}"}
		}
		return fail
	})
	f.On("kubeadm init", func(c exec.Cmd) exectest.Response {
		if failing(c) {
			// Killed half-way: the static pods are written, nothing else.
			write(m.t, root, "/etc/kubernetes/manifests/kube-apiserver.yaml", []byte("x"), 0o600)
			write(m.t, root, "/etc/kubernetes/kubelet.conf", []byte("x"), 0o600)
			return exectest.Response{ExitCode: 137, Stderr: "killed"}
		}
		for _, p := range []string{"/etc/kubernetes/admin.conf", "/etc/kubernetes/kubelet.conf", "/etc/kubernetes/manifests/kube-apiserver.yaml"} {
			write(m.t, root, p, []byte("x"), 0o600)
		}
		cs := st.cluster
		cs.mu.Lock()
		cs.up = true
		cs.nodes[node] = true
		cs.mu.Unlock()
		return ok
	})
	f.On("kubeadm join", func(c exec.Cmd) exectest.Response {
		cs := st.cluster
		cs.mu.Lock()
		defer cs.mu.Unlock()
		if !cs.up {
			return exectest.Response{ExitCode: 1, Stderr: "couldn't validate the identity of the API Server: connection refused"}
		}
		write(m.t, root, "/etc/kubernetes/kubelet.conf", []byte("x"), 0o600)
		cs.nodes[node] = true
		if m.env.Node.Role != cluster.RoleControlPlane {
			return ok
		}
		// control-plane-prepare, kubelet-start, etcd-join.
		for _, p := range []string{"/etc/kubernetes/admin.conf", "/etc/kubernetes/manifests/kube-apiserver.yaml", "/etc/kubernetes/manifests/etcd.yaml", "/var/lib/kubelet/config.yaml"} {
			write(m.t, root, p, []byte("x"), 0o600)
		}
		if cs.etcd == nil {
			cs.etcd, cs.labelled = map[string]string{}, map[string]bool{}
		}
		if cs.etcd[node] == "learner" {
			// A member with this peer URL is there already: kubeadm takes
			// it up again, and the new, empty etcd crashes on the leader's
			// first message (its old progress is out of its range).
			return exectest.Response{ExitCode: 1, Stderr: "error execution phase etcd-join: error creating local etcd static pod manifest file: etcdserver: can only promote a learner member which is in sync with leader"}
		}
		cs.etcd[node] = "learner"
		switch f := cs.joinFails; f {
		case "learner":
			cs.joinFails = ""
			return exectest.Response{ExitCode: 1, Stderr: "error execution phase etcd-join: error creating local etcd static pod manifest file: etcdserver: can only promote a learner member which is in sync with leader"}
		case "voting":
			cs.joinFails = ""
			cs.etcd[node] = "voting"
			return exectest.Response{ExitCode: 1, Stderr: "error execution phase etcd-join: error creating local etcd static pod manifest file: etcdserver: can only promote a learner member"}
		}
		cs.etcd[node] = "voting"
		cs.labelled[node] = true
		return ok
	})
	f.On("kubeadm join phase kubelet-wait-bootstrap --config /etc/kpaas/kubeadm.yaml", func(exec.Cmd) exectest.Response { return ok })
	f.On("kubeadm join phase control-plane-join mark-control-plane --config /etc/kpaas/kubeadm.yaml", func(exec.Cmd) exectest.Response {
		cs := st.cluster
		cs.mu.Lock()
		defer cs.mu.Unlock()
		cs.labelled[node] = true
		return ok
	})
	f.On("kubeadm reset", func(exec.Cmd) exectest.Response {
		// kubeadm stops the node's etcd (with two voting members the
		// cluster has no quorum without it) and means to remove its member,
		// which it did not manage under QEMU: the member stays.
		cs := st.cluster
		cs.mu.Lock()
		if cs.etcd[node] == "voting" {
			cs.up = false
		}
		cs.mu.Unlock()
		os.RemoveAll(filepath.Join(root, "etc/kubernetes"))
		return ok
	})
	etcdctl := func(c exec.Cmd) exectest.Response {
		cs := st.cluster
		cs.mu.Lock()
		defer cs.mu.Unlock()
		if cs.etcdSilent {
			return exectest.Response{ExitCode: 1, Stderr: "Error: context deadline exceeded"}
		}
		if strings.Contains(lineOf(c), " member remove ") {
			if c.Args[len(c.Args)-1] != "2" || cs.etcd["cp2"] == "" {
				return exectest.Response{ExitCode: 1, Stderr: "Error: etcdserver: member not found"}
			}
			delete(cs.etcd, "cp2")
			return exectest.Response{Stdout: "Member 2 removed from cluster 7\n"}
		}
		ms := []string{`{"ID":1,"name":"cp1","peerURLs":["https://10.0.0.11:2380"],"clientURLs":["https://10.0.0.11:2379"]}`}
		if s := cs.etcd["cp2"]; s != "" {
			learner := ""
			if s == "learner" {
				learner = `,"isLearner":true`
			}
			ms = append(ms, `{"ID":2,"name":"cp2","peerURLs":["https://10.0.0.12:2380"],"clientURLs":["https://10.0.0.12:2379"]`+learner+`}`)
		}
		return exectest.Response{Stdout: `{"header":{"cluster_id":7},"members":[` + strings.Join(ms, ",") + `]}`}
	}
	f.On("crictl ps --name ", func(exec.Cmd) exectest.Response {
		if _, err := os.Stat(filepath.Join(root, "etc/kubernetes/manifests/etcd.yaml")); err != nil {
			return ok
		}
		return exectest.Response{Stdout: "3f2a9c\n"}
	})
	f.On("crictl exec 3f2a9c etcdctl", etcdctl)
	f.On("kubectl --kubeconfig /etc/kubernetes/admin.conf -n kube-system exec etcd-cp1 -- etcdctl", func(c exec.Cmd) exectest.Response {
		st.mu.Lock()
		fails := st.execFails
		st.mu.Unlock()
		if fails {
			return exectest.Response{ExitCode: 1, Stderr: "error: unable to upgrade connection: etcdserver: request timed out"}
		}
		return etcdctl(c)
	})
	f.On("kubectl --kubeconfig /etc/kubernetes/admin.conf -n kube-system get daemonset kube-proxy", func(exec.Cmd) exectest.Response {
		cs := st.cluster
		cs.mu.Lock()
		defer cs.mu.Unlock()
		if cs.up && cs.nodes[m.env.Cluster.FirstControlPlane().Name] {
			return exectest.Response{Stdout: "daemonset.apps/kube-proxy\n"}
		}
		return fail
	})
	f.On("kubectl --kubeconfig /etc/kubernetes/kubelet.conf get node", func(c exec.Cmd) exectest.Response {
		cs := st.cluster
		cs.mu.Lock()
		defer cs.mu.Unlock()
		if !cs.up || !cs.nodes[node] {
			return exectest.Response{ExitCode: 1, Stderr: "NotFound"}
		}
		if strings.Contains(lineOf(c), "jsonpath={.metadata.labels}") {
			if cs.labelled[node] {
				return exectest.Response{Stdout: `{"kubernetes.io/hostname":"` + node + `","node-role.kubernetes.io/control-plane":""}`}
			}
			return exectest.Response{Stdout: `{"kubernetes.io/hostname":"` + node + `"}`}
		}
		if strings.Contains(lineOf(c), "jsonpath") {
			if cs.network {
				return exectest.Response{Stdout: "True"}
			}
			return exectest.Response{Stdout: "False"}
		}
		return exectest.Response{Stdout: "node/" + node}
	})
	f.On("kubectl --kubeconfig /etc/kubernetes/admin.conf get --raw /readyz", func(exec.Cmd) exectest.Response {
		cs := st.cluster
		cs.mu.Lock()
		defer cs.mu.Unlock()
		if !cs.up {
			return exectest.Response{ExitCode: 1, Stderr: "The connection to the server 10.0.0.11:6443 was refused"}
		}
		if cs.notReady > 0 {
			cs.notReady--
			return exectest.Response{ExitCode: 1, Stderr: "Error from server (InternalError): [-]poststarthook/rbac/bootstrap-roles failed: not finished"}
		}
		return exectest.Response{Stdout: "ok"}
	})
	f.On("kubectl --kubeconfig /etc/kubernetes/admin.conf apply --server-side --force-conflicts --field-manager kpaas-agent --validate=false -f /usr/share/kpaas/network", func(exec.Cmd) exectest.Response {
		cs := st.cluster
		cs.mu.Lock()
		defer cs.mu.Unlock()
		if cs.notReady > 0 {
			return exectest.Response{ExitCode: 1, Stderr: `Error from server (Forbidden): daemonsets.apps "kube-router" is forbidden: User "kubernetes-admin" cannot patch resource "daemonsets"`}
		}
		cs.network = true
		return ok
	})
	f.On("kubectl --kubeconfig /etc/kubernetes/admin.conf get nodes -o json", func(exec.Cmd) exectest.Response {
		return exectest.Response{Stdout: `{"items":[{"metadata":{"name":"cp1","annotations":{"kpaas.dev/agent-status":"{}"}}}]}`}
	})
	f.On("kubectl --kubeconfig /etc/kubernetes/admin.conf -n kube-system get secret", func(exec.Cmd) exectest.Response {
		return exectest.Response{ExitCode: 1, Stderr: "NotFound"}
	})
}

func lineOf(c exec.Cmd) string {
	c.Secret = false
	c.Redact = nil
	return c.String()
}

func write(t *testing.T, root, p string, b []byte, mode os.FileMode) {
	t.Helper()
	full := filepath.Join(root, p)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(full, b, mode); err != nil {
		t.Fatal(err)
	}
	os.Chmod(full, mode)
}

func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if fi.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, fi.Mode())
	})
	if err != nil {
		t.Fatal(err)
	}
}

func cniTarball(t *testing.T) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, n := range []string{"./", "./bridge", "./host-local", "./loopback", "./portmap", "./LICENSE"} {
		if strings.HasSuffix(n, "/") {
			tw.WriteHeader(&tar.Header{Name: n, Typeflag: tar.TypeDir, Mode: 0o755})
			continue
		}
		body := []byte("#!plugin " + n)
		tw.WriteHeader(&tar.Header{Name: n, Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(body))})
		tw.Write(body)
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

// snapshot lists the files the agent wrote (outside the media and the
// kernel's view) with their modes; text files with content, secrets and
// binaries by size and digest.
func (m *machine) snapshot() string {
	type entry struct{ path, text string }
	var es []entry
	filepath.Walk(m.root, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return nil
		}
		rel := "/" + filepath.ToSlash(mustRel(m.root, p))
		for _, skip := range []string{"/run/", "/sys/", "/proc/", "/usr/share/kpaas/", "/opt/cni/kpaas/", names.StateDir + "/journal.json"} {
			if strings.HasPrefix(rel, skip) {
				return nil
			}
		}
		b, _ := os.ReadFile(p)
		head := fmt.Sprintf("== %s %04o", rel, fi.Mode().Perm())
		switch {
		case strings.HasPrefix(rel, "/etc/kubernetes/pki/"):
			head += " (from the config disk)"
		case strings.HasPrefix(rel, "/opt/cni/bin/") || strings.HasPrefix(rel, "/etc/kubernetes/"):
			head += fmt.Sprintf(" sha256:%x", sha256.Sum256(b))
		default:
			head += "\n" + m.redact(string(b))
		}
		es = append(es, entry{rel, head})
		return nil
	})
	sort.Slice(es, func(i, j int) bool { return es[i].path < es[j].path })
	var b strings.Builder
	for _, e := range es {
		b.WriteString(e.text)
		if !strings.HasSuffix(e.text, "\n") {
			b.WriteString("\n")
		}
	}
	return b.String()
}

// redact replaces what differs between runs: the CA's hash.
func (m *machine) redact(s string) string {
	ca, err := os.ReadFile(filepath.Join(shared.secrets, cluster.SecretsDir, cluster.CACert))
	if err == nil {
		if h, err := clustersecrets.CAHash(ca); err == nil {
			s = strings.ReplaceAll(s, h, "<ca-hash>")
		}
	}
	return s
}

func mustRel(base, p string) string {
	r, err := filepath.Rel(base, p)
	if err != nil {
		panic(err)
	}
	return r
}
