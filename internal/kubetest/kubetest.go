// Package kubetest starts a real Kubernetes control plane for tests: the etcd
// and kube-apiserver (and optionally kube-controller-manager and
// kube-scheduler) that `kpaas toolchain build` compiled from source, on free
// 127.0.0.1 ports, with PKI and kubeconfigs made by the built kubeadm.
//
// Binaries are looked up in $KPAAS_TOOLCHAIN_DIR, else in the bin/ folder of
// the toolchain cache ($KPAAS_CACHE/toolchain/bin or
// os.UserCacheDir()/kpaas/toolchain/bin). When they are missing the test is
// skipped with a message saying how to build them; every other problem fails
// the test.
//
// Lifecycle: Start registers t.Cleanup hooks that stop the processes in
// reverse start order (SIGTERM, then SIGKILL after 10 s) and remove the
// folder. Each Start makes a fresh cluster (~5–10 s); share one Env across
// subtests when speed matters. Processes also die with the test binary
// (Pdeathsig).
//
// The package uses no client-go (Helm pins a different k8s.io/client-go
// minor in this module); Env carries what a rest.Config needs (Host, CA,
// client certificate) and an *http.Client for the REST API.
package kubetest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"kpaas.dev/appliance/internal/testenv"
)

// Env is a running control plane.
type Env struct {
	// Host is the API server URL, https://127.0.0.1:<port>.
	Host string
	// Kubeconfig is an admin kubeconfig (group kubeadm:cluster-admins, bound
	// to cluster-admin) that talks to Host.
	Kubeconfig string
	// CAData, CertData and KeyData are PEM: the cluster CA and the admin's
	// client certificate and key (what rest.Config.TLSClientConfig needs).
	CAData, CertData, KeyData []byte
	// Dir holds pki/, the kubeconfigs, etcd's data and the process logs.
	Dir string
	// BinDir is where the binaries were found.
	BinDir string
	// StaticPods is the kubelet's static pod folder (WithNode only).
	StaticPods string

	t     testing.TB
	procs testenv.Procs
}

type options struct {
	controllerManager bool
	scheduler         bool
	binDir            string
	verbose           bool
	node              bool
	hostsDir          string
}

// An Option changes what Start starts.
type Option func(*options)

// WithControllerManager also runs kube-controller-manager (Deployments get
// ReplicaSets and Pods, namespaces get their default ServiceAccount).
func WithControllerManager() Option { return func(o *options) { o.controllerManager = true } }

// WithScheduler also runs kube-scheduler.
func WithScheduler() Option { return func(o *options) { o.scheduler = true } }

// WithBinDir looks for the binaries in dir instead of the toolchain cache.
func WithBinDir(dir string) Option { return func(o *options) { o.binDir = dir } }

// WithLogs copies the components' logs into the test log when the test fails.
func WithLogs() Option { return func(o *options) { o.verbose = true } }

// BinDir is the folder Start looks in when no WithBinDir is given.
func BinDir() string { return testenv.ToolchainBin() }

// Start starts etcd and kube-apiserver (and what the options add), waits
// until the API server is ready and the admin kubeconfig is authorized, and
// returns the running Env. It skips t only when binaries are missing, and
// then fails it instead in CI (internal/testenv).
func Start(t testing.TB, opts ...Option) *Env {
	t.Helper()
	o := options{binDir: BinDir()}
	for _, opt := range opts {
		opt(&o)
	}
	need := []string{"etcd", "kube-apiserver", "kubeadm", "kubectl"}
	if o.controllerManager {
		need = append(need, "kube-controller-manager")
	}
	if o.scheduler {
		need = append(need, "kube-scheduler")
	}
	if o.node {
		need = append(need, nodeBinaries...)
	}
	var missing []string
	for _, b := range need {
		if st, err := os.Stat(filepath.Join(o.binDir, b)); err != nil || st.IsDir() {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		testenv.SkipOrFailf(t, "kubetest: %s not in %s: build the toolchain first (`make toolchain`, i.e. `kpaas toolchain build`) or set KPAAS_TOOLCHAIN_DIR",
			strings.Join(missing, ", "), o.binDir)
	}

	if o.node {
		nodeAllowed(t, o)
	}
	dir, err := os.MkdirTemp("", "kubetest-")
	if err != nil {
		t.Fatal(err)
	}
	e := &Env{Dir: dir, BinDir: o.binDir, t: t, procs: testenv.Procs{Dir: dir}}
	t.Cleanup(func() {
		e.stop()
		if t.Failed() && o.verbose {
			e.dumpLogs()
		}
		if t.Failed() && os.Getenv("KUBETEST_KEEP") != "" {
			t.Logf("kubetest: keeping %s (KUBETEST_KEEP is set); remove it with: rm -rf %s", dir, dir)
			return
		}
		os.RemoveAll(dir)
	})
	if err := e.start(o); err != nil {
		e.dumpLogs()
		t.Fatalf("kubetest: %v", err)
	}
	if o.node {
		if err := e.startNode(o); err != nil {
			e.dumpLogs()
			t.Fatalf("kubetest: the node: %v", err)
		}
	}
	return e
}

func (e *Env) start(o options) error {
	ports, err := testenv.FreePorts(3)
	if err != nil {
		return err
	}
	etcdPort, peerPort, apiPort := ports[0], ports[1], ports[2]
	e.Host = "https://127.0.0.1:" + strconv.Itoa(apiPort)
	pki := filepath.Join(e.Dir, "pki")

	// kubeadm rejects a loopback advertise address (it looks for a global
	// address on the same interface), and the API server refuses to publish
	// one in the kubernetes Endpoints. Any non-loopback address works: the
	// server binds to 127.0.0.1 only, and the certificates carry 127.0.0.1.
	advertise := "198.51.100.10" // TEST-NET-2, never routed
	cfg := fmt.Sprintf(kubeadmConfig, advertise, apiPort, KubernetesVersion, apiPort, pki)
	cfgPath := filepath.Join(e.Dir, "kubeadm.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	if err := e.run("kubeadm", "init", "phase", "certs", "all", "--config", cfgPath); err != nil {
		return err
	}
	for _, kc := range []string{"admin", "super-admin", "controller-manager", "scheduler"} {
		if err := e.run("kubeadm", "init", "phase", "kubeconfig", kc, "--config", cfgPath, "--kubeconfig-dir", e.Dir); err != nil {
			return err
		}
	}
	// controller-manager.conf and scheduler.conf name the advertise address.
	for _, kc := range []string{"controller-manager.conf", "scheduler.conf"} {
		p := filepath.Join(e.Dir, kc)
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		data = bytes.ReplaceAll(data, []byte("https://"+advertise+":"), []byte("https://127.0.0.1:"))
		if err := os.WriteFile(p, data, 0o600); err != nil {
			return err
		}
	}
	e.Kubeconfig = filepath.Join(e.Dir, "admin.conf")
	if e.CertData, e.KeyData, err = clientCert(e.Kubeconfig); err != nil {
		return err
	}
	if e.CAData, err = os.ReadFile(filepath.Join(pki, "ca.crt")); err != nil {
		return err
	}

	etcdURL := "https://127.0.0.1:" + strconv.Itoa(etcdPort)
	peerURL := "https://127.0.0.1:" + strconv.Itoa(peerPort)
	ep := func(f string) string { return filepath.Join(pki, "etcd", f) }
	if err := e.spawn("etcd",
		"--name=kubetest",
		"--data-dir="+filepath.Join(e.Dir, "etcd"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=kubetest="+peerURL,
		"--cert-file="+ep("server.crt"), "--key-file="+ep("server.key"),
		"--client-cert-auth=true", "--trusted-ca-file="+ep("ca.crt"),
		"--peer-cert-file="+ep("peer.crt"), "--peer-key-file="+ep("peer.key"),
		"--peer-client-cert-auth=true", "--peer-trusted-ca-file="+ep("ca.crt"),
		"--unsafe-no-fsync=true", "--snapshot-count=10000",
	); err != nil {
		return err
	}

	p := func(f string) string { return filepath.Join(pki, f) }
	// The flags kubeadm's kube-apiserver static pod uses.
	if err := e.spawn("kube-apiserver",
		"--advertise-address="+advertise,
		"--bind-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(apiPort),
		"--allow-privileged=true",
		"--authorization-mode=Node,RBAC",
		"--client-ca-file="+p("ca.crt"),
		"--enable-admission-plugins=NodeRestriction",
		"--enable-bootstrap-token-auth=true",
		"--etcd-cafile="+ep("ca.crt"),
		"--etcd-certfile="+p("apiserver-etcd-client.crt"),
		"--etcd-keyfile="+p("apiserver-etcd-client.key"),
		"--etcd-servers="+etcdURL,
		"--kubelet-client-certificate="+p("apiserver-kubelet-client.crt"),
		"--kubelet-client-key="+p("apiserver-kubelet-client.key"),
		"--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
		"--proxy-client-cert-file="+p("front-proxy-client.crt"),
		"--proxy-client-key-file="+p("front-proxy-client.key"),
		"--requestheader-allowed-names=front-proxy-client",
		"--requestheader-client-ca-file="+p("front-proxy-ca.crt"),
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-username-headers=X-Remote-User",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+p("sa.pub"),
		"--service-account-signing-key-file="+p("sa.key"),
		"--service-cluster-ip-range=10.96.0.0/12",
		"--tls-cert-file="+p("apiserver.crt"),
		"--tls-private-key-file="+p("apiserver.key"),
		"--cert-dir="+filepath.Join(e.Dir, "apiserver-certs"),
	); err != nil {
		return err
	}
	if err := e.waitReady(90 * time.Second); err != nil {
		return err
	}

	// kubeadm init creates this binding with super-admin.conf; admin.conf's
	// user is only in group kubeadm:cluster-admins (since 1.29).
	if err := e.run("kubectl", "--kubeconfig", filepath.Join(e.Dir, "super-admin.conf"),
		"create", "clusterrolebinding", "kubeadm:cluster-admins",
		"--clusterrole=cluster-admin", "--group=kubeadm:cluster-admins"); err != nil {
		return err
	}

	if o.controllerManager {
		kc := filepath.Join(e.Dir, "controller-manager.conf")
		if err := e.spawn("kube-controller-manager",
			"--kubeconfig="+kc, "--authentication-kubeconfig="+kc, "--authorization-kubeconfig="+kc,
			"--bind-address=127.0.0.1", "--secure-port=0",
			"--client-ca-file="+p("ca.crt"),
			"--cluster-name=kubetest",
			"--cluster-signing-cert-file="+p("ca.crt"),
			"--cluster-signing-key-file="+p("ca.key"),
			"--controllers=*,bootstrapsigner,tokencleaner",
			"--leader-elect=false",
			"--requestheader-client-ca-file="+p("front-proxy-ca.crt"),
			"--root-ca-file="+p("ca.crt"),
			"--service-account-private-key-file="+p("sa.key"),
			"--use-service-account-credentials=true",
		); err != nil {
			return err
		}
	}
	if o.scheduler {
		kc := filepath.Join(e.Dir, "scheduler.conf")
		if err := e.spawn("kube-scheduler",
			"--kubeconfig="+kc, "--authentication-kubeconfig="+kc, "--authorization-kubeconfig="+kc,
			"--bind-address=127.0.0.1", "--secure-port=0", "--leader-elect=false",
		); err != nil {
			return err
		}
	}
	return nil
}

// KubernetesVersion is the version of the control plane kubetest expects.
const KubernetesVersion = "v1.35.4"

const kubeadmConfig = `apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
localAPIEndpoint:
  advertiseAddress: %s
  bindPort: %d
nodeRegistration:
  name: kubetest
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: %s
clusterName: kubetest
controlPlaneEndpoint: 127.0.0.1:%d
certificatesDir: %s
apiServer:
  certSANs: [127.0.0.1, localhost]
networking:
  serviceSubnet: 10.96.0.0/12
  podSubnet: 10.244.0.0/16
`

// HTTPClient returns a client that trusts the cluster CA and authenticates
// as the admin, for requests to e.Host.
func (e *Env) HTTPClient() *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.CAData)
	cert, err := tls.X509KeyPair(e.CertData, e.KeyData)
	if err != nil {
		e.t.Fatalf("kubetest: admin certificate: %v", err)
	}
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12,
		}},
	}
}

// Kubectl runs the built kubectl with the admin kubeconfig and returns its
// standard output; it fails the test when kubectl fails. stdin, when not
// nil, is passed to kubectl (for `apply -f -`).
func (e *Env) Kubectl(stdin []byte, args ...string) string {
	e.t.Helper()
	out, err := e.KubectlErr(stdin, args...)
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// UserKubeconfig writes a kubeconfig for user, a member of groups, whose
// client certificate the cluster CA signs (kubeadm kubeconfig user), and
// returns its path: a node's kubelet, say, is user system:node:NAME in
// group system:nodes, which the API server's Node and RBAC authorizers
// treat as that node.
func (e *Env) UserKubeconfig(user string, groups ...string) string {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args := []string{"kubeconfig", "user", "--config", filepath.Join(e.Dir, "kubeadm.yaml"), "--client-name", user}
	for _, g := range groups {
		args = append(args, "--org", g)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, filepath.Join(e.BinDir, "kubeadm"), args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		e.t.Fatalf("kubetest: kubeadm %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	p := filepath.Join(e.Dir, strings.NewReplacer(":", "_", "/", "_").Replace(user)+".conf")
	if err := os.WriteFile(p, stdout.Bytes(), 0o600); err != nil {
		e.t.Fatal(err)
	}
	return p
}

// KubectlErr is Kubectl returning the error instead of failing the test.
func (e *Env) KubectlErr(stdin []byte, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(e.BinDir, "kubectl"), append([]string{"--kubeconfig", e.Kubeconfig}, args...)...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// Eventually polls f every 200 ms until it returns nil or timeout passes,
// then fails the test with f's last error.
func (e *Env) Eventually(timeout time.Duration, f func() error) {
	e.t.Helper()
	if err := e.poll(timeout, f); err != nil {
		e.t.Fatalf("kubetest: not true after %s: %v", timeout, err)
	}
}

func (e *Env) spawn(name string, args ...string) error {
	return e.procs.Start(name, exec.Command(filepath.Join(e.BinDir, name), args...))
}

// run runs a short-lived binary to completion.
func (e *Env) run(name string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(e.BinDir, name), args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

func (e *Env) stop() { e.procs.StopAll() }

func (e *Env) dumpLogs() {
	for _, p := range e.procs.List() {
		e.t.Logf("kubetest: %s log (%s):\n%s", p.Name, p.Log, p.Tail(8000))
	}
}

// waitReady polls /readyz until it answers 200, failing early when a
// process exits.
func (e *Env) waitReady(timeout time.Duration) error {
	c := e.HTTPClient()
	c.Timeout = 5 * time.Second
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if p := e.procs.Exited(); p != nil {
			return fmt.Errorf("%s exited while waiting for the API server: %v (log: %s)", p.Name, p.Err(), p.Log)
		}
		resp, err := c.Get(e.Host + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("/readyz: %s", resp.Status)
		}
		last = err
		time.Sleep(250 * time.Millisecond)
	}
	return fmt.Errorf("API server not ready after %s: %w", timeout, last)
}

// clientCert reads the embedded client certificate and key of a kubeconfig
// written by kubeadm (one user, base64 data fields).
func clientCert(kubeconfig string) (cert, key []byte, err error) {
	data, err := os.ReadFile(kubeconfig)
	if err != nil {
		return nil, nil, err
	}
	field := func(name string) ([]byte, error) {
		for _, line := range strings.Split(string(data), "\n") {
			k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
			if ok && k == name {
				return base64.StdEncoding.DecodeString(strings.TrimSpace(v))
			}
		}
		return nil, fmt.Errorf("%s: no %s", kubeconfig, name)
	}
	if cert, err = field("client-certificate-data"); err != nil {
		return nil, nil, err
	}
	if key, err = field("client-key-data"); err != nil {
		return nil, nil, err
	}
	if len(cert) == 0 || len(key) == 0 {
		return nil, nil, errors.New(kubeconfig + ": empty client certificate")
	}
	return cert, key, nil
}
