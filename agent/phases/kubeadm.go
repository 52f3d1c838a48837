package phases

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"strings"
	"text/template"
	"time"

	cluster "kpaas.dev/appliance/api/cluster/v1alpha1"
	"kpaas.dev/appliance/internal/clustersecrets"
	"kpaas.dev/appliance/internal/exec"
	"kpaas.dev/appliance/internal/names"
	"kpaas.dev/appliance/internal/retry"
)

// Files and places of the kubeadm phase.
const (
	kubeadmConfig   = "/etc/kpaas/kubeadm.yaml" // 0600: it holds the bootstrap token
	kubeadmPatches  = "/etc/kpaas/kubeadm-patches"
	kubeletUnit     = "/etc/systemd/system/kubelet.service"
	kubeletDropIn   = "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf"
	pkiDir          = "/etc/kubernetes/pki"
	adminConf       = "/etc/kubernetes/admin.conf"
	kubeletConf     = "/etc/kubernetes/kubelet.conf"
	apiServerManif  = "/etc/kubernetes/manifests/kube-apiserver.yaml"
	kubeadmMarker   = names.StateDir + "/kubeadm.done"
	etcdMemberDir   = "/var/lib/etcd/member"
	manifestsDir    = "/etc/kubernetes/manifests"
	kubeletBinary   = "/usr/local/bin/kubelet"
	kubeadmBootWait = 600 // seconds a joining node waits for the API before retrying
)

// KubeletConf is the kubelet's kubeconfig, which every node has once it
// joined: the agent's credentials on a node other than a control plane.
const KubeletConf = kubeletConf

// controlPlanePKI are the secrets a control plane copies to
// /etc/kubernetes/pki: kubeadm then makes every other certificate from
// the cluster's own CAs, so every node trusts the same cluster.
var controlPlanePKI = []string{
	cluster.CACert, cluster.CAKey,
	cluster.FrontProxyCACert, cluster.FrontProxyCAKey,
	cluster.EtcdCACert, cluster.EtcdCAKey,
	cluster.SAKey, cluster.SAPub,
}

// kubeadm makes the node a member of the cluster: `kubeadm init` on the
// first control plane with the site's pre-made CAs and bootstrap token,
// `kubeadm join` elsewhere (further control planes with the shared CAs),
// waiting for the API to answer. A node that is already initialised or
// joined is recognised and never initialised again; one that was
// interrupted half-way is reset and done again.
func kubeadm() Phase {
	return Phase{
		Name: "kubeadm",
		Plan: func(e *Env) []string {
			fs, err := kubeadmFiles(e)
			if err != nil {
				return []string{"cannot plan: " + err.Error()}
			}
			p := filePlan(fs)
			if e.IsFirstControlPlane() {
				return append(p, "kubeadm init --config "+kubeadmConfig+" --skip-token-print (the first control plane)")
			}
			p = append(p, "wait until the API at "+e.Cluster.ControlPlaneEndpoint.String()+" answers")
			if e.IsControlPlane() {
				return append(p, "kubeadm join --config "+kubeadmConfig+" (a further control plane, with the cluster's CAs)")
			}
			return append(p, "kubeadm join --config "+kubeadmConfig)
		},
		Check: func(ctx context.Context, e *Env) (bool, error) { return kubeadmDone(ctx, e), nil },
		Run:   runKubeadm,
		// A joining node retries until the control plane is up: a worker
		// may be powered on long before it.
		Retry: retry.Policy{Attempts: 12, Base: 10 * time.Second, Max: 60 * time.Second},
	}
}

// kubeadmDone reports whether this node is in the cluster. The marker
// (written when kubeadm succeeded) with the kubelet's kubeconfig is
// enough: the API may be down when a node reboots. Without the marker, the
// cluster itself is asked, and a positive answer writes the marker.
func kubeadmDone(ctx context.Context, e *Env) bool {
	if !e.Host.Exists(kubeletConf) {
		return false
	}
	if e.Host.Exists(kubeadmMarker) {
		return true
	}
	if !kubeadmComplete(ctx, e) {
		return false
	}
	return markKubeadm(e) == nil
}

func role(e *Env) string {
	if e.IsFirstControlPlane() {
		return "init"
	}
	return "join"
}

// kubeadmComplete asks the cluster whether kubeadm finished here: on the
// first control plane, kube-proxy's DaemonSet exists (kubeadm init's last
// phase made it); elsewhere the node is registered.
func kubeadmComplete(ctx context.Context, e *Env) bool {
	if e.IsFirstControlPlane() {
		if !e.Host.Exists(adminConf) {
			return false
		}
		_, err := e.Host.Run(ctx, "kubectl", "--kubeconfig", adminConf, "-n", "kube-system", "get", "daemonset", "kube-proxy", "-o", "name")
		return err == nil
	}
	if !e.Host.Exists(kubeletConf) || e.IsControlPlane() && !e.Host.Exists(apiServerManif) {
		return false
	}
	if !e.IsControlPlane() {
		_, err := e.Host.Run(ctx, "kubectl", "--kubeconfig", kubeletConf, "get", "node", e.Node.Name, "-o", "name")
		return err == nil
	}
	// A further control plane registers as a node long before its join
	// ends: the control-plane label is the join's last change.
	out, err := e.Host.Run(ctx, "kubectl", "--kubeconfig", kubeletConf, "get", "node", e.Node.Name, "-o", "jsonpath={.metadata.labels}")
	if err != nil {
		return false
	}
	var labels map[string]string
	if json.Unmarshal(out, &labels) != nil {
		return false
	}
	_, ok := labels[controlPlaneLabel]
	return ok
}

// controlPlaneLabel is the label kubeadm puts on a control plane's node.
const controlPlaneLabel = "node-role.kubernetes.io/control-plane"

func runKubeadm(ctx context.Context, e *Env) error {
	if kubeadmComplete(ctx, e) {
		return markKubeadm(e)
	}
	token, err := readSecret(e, cluster.Token)
	if err != nil {
		return err
	}
	// Leftovers of an interrupted kubeadm: start over from a clean node,
	// unless this is a further control plane whose etcd member votes.
	if leftovers(e) {
		if finished, err := rescueJoin(ctx, e, token); err != nil {
			return err
		} else if finished {
			return markKubeadm(e)
		}
		e.Progress.Printf("kubeadm: an earlier attempt was interrupted on this node: kubeadm reset")
		if _, err := e.Host.Run(ctx, "kubeadm", "reset", "--force"); err != nil {
			return err
		}
		for _, p := range []string{manifestsDir, etcdMemberDir, kubeletConf, adminConf, "/etc/kubernetes/bootstrap-kubelet.conf"} {
			if err := e.Host.Remove(p); err != nil {
				return err
			}
		}
	}
	fs, err := kubeadmFiles(e)
	if err != nil {
		return err
	}
	if _, err := e.writeFiles(fs); err != nil {
		return err
	}
	for _, c := range [][]string{{"systemctl", "daemon-reload"}, {"systemctl", "enable", "kubelet"}} {
		if _, err := e.Host.Run(ctx, c[0], c[1:]...); err != nil {
			return err
		}
	}
	var c exec.Cmd
	if e.IsFirstControlPlane() {
		c = exec.Command("kubeadm", "init", "--config", kubeadmConfig, "--skip-token-print")
	} else {
		ep := e.Cluster.ControlPlaneEndpoint.String()
		var last error
		if err := e.waitFor(ctx, "the API at "+ep, kubeadmBootWait, func() bool {
			last = e.Dial(ctx, ep)
			return last == nil
		}); err != nil {
			return fmt.Errorf("%w: %v", err, last)
		}
		c = exec.Command("kubeadm", "join", "--config", kubeadmConfig)
	}
	c.Redact = []string{token}
	c.Progress, c.ProgressPrefix = e.Progress.Writer(), "kubeadm: "
	if _, err := e.Host.RunCmd(ctx, c); err != nil {
		if e.IsFirstControlPlane() {
			return err
		}
		// The API answered but joining failed (the control plane still
		// starting, the token not yet there): retry from a clean node. A
		// further control plane asks etcd first (etcdmember.go).
		if finished, rerr := rescueJoin(ctx, e, token); rerr != nil {
			return rerr
		} else if finished {
			return markKubeadm(e)
		}
		e.Host.Run(ctx, "kubeadm", "reset", "--force")
		return retry.Retryable(err)
	}
	return markKubeadm(e)
}

// markKubeadm writes the phase's marker: kubeadm is done on this node.
func markKubeadm(e *Env) error {
	_, err := e.Host.WriteFile(kubeadmMarker, []byte(role(e)+"\n"), 0o644)
	return err
}

// leftovers reports whether an earlier kubeadm run left state behind.
func leftovers(e *Env) bool {
	ms, _ := e.Host.Glob(manifestsDir + "/*.yaml")
	return len(ms) > 0 || e.Host.Exists(kubeletConf) || e.Host.Exists(etcdMemberDir)
}

// readSecret reads one secret of the config disk.
func readSecret(e *Env, name string) (string, error) {
	if e.SecretsDir == "" {
		return "", errors.New("no secrets: this node has no config disk (kpaas cluster config-disk), so it cannot join a cluster")
	}
	b, err := e.Host.ReadFile(path.Join(e.SecretsDir, name))
	if err != nil {
		return "", fmt.Errorf("the config disk lacks %s: %w", name, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// kubeadmFiles are the files the phase keeps: the kubeadm configuration,
// the kubelet's units, and on control planes the cluster's CAs.
func kubeadmFiles(e *Env) ([]file, error) {
	token, err := readSecret(e, cluster.Token)
	if err != nil {
		return nil, err
	}
	caPEM, err := e.Host.ReadFile(path.Join(e.SecretsDir, cluster.CACert))
	if err != nil {
		return nil, fmt.Errorf("the config disk lacks %s: %w", cluster.CACert, err)
	}
	cfg, err := kubeadmYAML(e, token, caPEM)
	if err != nil {
		return nil, err
	}
	fs := []file{
		{kubeadmConfig, 0o600, cfg},
		{kubeletUnit, 0o644, []byte(kubeletService)},
		{kubeletDropIn, 0o644, []byte(kubeletKubeadmDropIn)},
	}
	if e.IsControlPlane() {
		for _, c := range controlPlanePatches {
			fs = append(fs, file{path.Join(kubeadmPatches, c+"+strategic.yaml"), 0o644, probePatch(c)})
		}
		for _, s := range controlPlanePKI {
			b, err := e.Host.ReadFile(path.Join(e.SecretsDir, s))
			if err != nil {
				return nil, fmt.Errorf("a control plane's config disk must carry %s: %w", s, err)
			}
			mode := os.FileMode(0o644)
			if strings.HasSuffix(s, ".key") {
				mode = 0o600
			}
			fs = append(fs, file{path.Join(pkiDir, strings.TrimPrefix(s, "pki/")), mode, b})
		}
	}
	return fs, nil
}

// kubeadmValues fill the kubeadm configuration template.
type kubeadmValues struct {
	Init, ControlPlane            bool
	Name, IP, Token, CAHash       string
	ClusterName, Version          string
	Endpoint                      string
	Port                          int
	PodCIDR, ServiceCIDR, Domain  string
	EtcdTag, CoreDNSTag, ProxyMod string
	SANs                          []string
}

func kubeadmYAML(e *Env, token string, caPEM []byte) ([]byte, error) {
	hash, err := clustersecrets.CAHash(caPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cluster.CACert, err)
	}
	etcd, err := e.Lock.ImageTag("registry.k8s.io/etcd")
	if err != nil {
		return nil, err
	}
	dns, err := e.Lock.ImageTag("registry.k8s.io/coredns/coredns")
	if err != nil {
		return nil, err
	}
	c := e.Cluster
	v := kubeadmValues{
		Init: e.IsFirstControlPlane(), ControlPlane: e.IsControlPlane(),
		Name: e.Node.Name, IP: nodeIP(e.Node), Token: token, CAHash: hash,
		ClusterName: c.Metadata.Name, Version: e.Lock.KubernetesVersion,
		Endpoint: c.ControlPlaneEndpoint.String(), Port: c.ControlPlaneEndpoint.Port,
		PodCIDR: c.Networking.PodCIDR, ServiceCIDR: c.Networking.ServiceCIDR, Domain: c.Networking.DNSDomain,
		EtcdTag: etcd, CoreDNSTag: dns, ProxyMod: c.Networking.ProxyMode,
	}
	seen := map[string]bool{}
	// 127.0.0.1 too: an operator may reach the API through a forwarded
	// port (a hypervisor's NAT, an SSH tunnel).
	for _, s := range append(append([]string{c.ControlPlaneEndpoint.Host}, controlPlaneIPs(c)...), "127.0.0.1") {
		if !seen[s] {
			seen[s] = true
			v.SANs = append(v.SANs, s)
		}
	}
	var b bytes.Buffer
	if err := kubeadmTemplate.Execute(&b, v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func controlPlaneIPs(c *cluster.Cluster) []string {
	var out []string
	for i := range c.Nodes {
		if c.Nodes[i].Role == cluster.RoleControlPlane {
			out = append(out, nodeIP(&c.Nodes[i]))
		}
	}
	return out
}

var kubeadmTemplate = template.Must(template.New("kubeadm").Parse(`# Written by kpaas-agent from the cluster configuration (0600: holds the bootstrap token).
{{- if .Init}}
apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
bootstrapTokens:
  - token: "{{.Token}}"
    description: "kpaas: node joins; kept valid by the control planes' agents"
    ttl: 24h0m0s
    usages: [signing, authentication]
    groups: ["system:bootstrappers:kubeadm:default-node-token"]
localAPIEndpoint:
  advertiseAddress: {{.IP}}
  bindPort: {{.Port}}
{{- else}}
apiVersion: kubeadm.k8s.io/v1beta4
kind: JoinConfiguration
discovery:
  bootstrapToken:
    apiServerEndpoint: "{{.Endpoint}}"
    token: "{{.Token}}"
    caCertHashes: ["{{.CAHash}}"]
{{- if .ControlPlane}}
controlPlane:
  localAPIEndpoint:
    advertiseAddress: {{.IP}}
    bindPort: {{.Port}}
{{- end}}
{{- end}}
# Generous: under load (or software emulation) a control plane takes minutes.
timeouts:
  controlPlaneComponentHealthCheck: 20m0s
  kubeletHealthCheck: 10m0s
  kubernetesAPICall: 5m0s
  etcdAPICall: 5m0s
  tlsBootstrap: 20m0s
  discovery: 20m0s
nodeRegistration:
  name: {{.Name}}
  criSocket: ` + criSocket + `
  imagePullPolicy: IfNotPresent
  kubeletExtraArgs:
    - name: node-ip
      value: {{.IP}}
{{- if .ControlPlane}}
patches:
  directory: ` + kubeadmPatches + `
{{- end}}
{{- if .Init}}
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
clusterName: {{.ClusterName}}
kubernetesVersion: {{.Version}}
controlPlaneEndpoint: "{{.Endpoint}}"
certificatesDir: ` + pkiDir + `
imageRepository: registry.k8s.io
networking:
  podSubnet: {{.PodCIDR}}
  serviceSubnet: {{.ServiceCIDR}}
  dnsDomain: {{.Domain}}
# etcd's raft timing as K-PaaS's installer (Kubespray) sets it: a 5 s
# election timeout instead of 1 s also gives a request 15 s instead of 7 s
# before etcd answers "request timed out", which a busy or slow machine
# reached over and over (every client retried, loading it more).
etcd:
  local:
    imageTag: {{.EtcdTag}}
    extraArgs:
      - {name: heartbeat-interval, value: "250"}
      - {name: election-timeout, value: "5000"}
dns:
  imageTag: {{.CoreDNSTag}}
# The API server's etcd checks wait longer than 2 s for etcd: on a busy or
# slow machine etcd answers in seconds while it works. /healthz's (and
# /livez's) waits up to 60 s: the controller manager and the scheduler
# exit at their start when /healthz fails within 10 s ("failed to wait for
# apiserver being healthy") but take a slow answer, and they crash-looped
# (no volume bound for many minutes) with 2 s and with 10 s. The check runs
# at most every 30 s; other callers get its last result. /readyz's waits
# 10 s, under the readiness probe's 15 s.
apiServer:
  certSANs:
{{- range .SANs}}
    - "{{.}}"
{{- end}}
  extraArgs:
    - {name: etcd-healthcheck-timeout, value: 60s}
    - {name: etcd-readycheck-timeout, value: 10s}
# Leader election that tolerates a busy or slow machine: the controller
# manager and the scheduler exit when they cannot renew their lease within
# the renew deadline. The defaults (15 s lease, 10 s renew deadline)
# restarted them whenever etcd answered slowly, and so did 60 s / 45 s
# (TestClusterHarbor: two lease updates of 22.5 s each timed out). These
# are OpenShift's values, chosen to survive a minute and more of API
# server unavailability: 137 s lease, 107 s renew deadline, 26 s between
# tries. The cost: a failover, or a restarted one, waits up to 137 s.
controllerManager:
  extraArgs:
    - {name: leader-elect-lease-duration, value: 137s}
    - {name: leader-elect-renew-deadline, value: 107s}
    - {name: leader-elect-retry-period, value: 26s}
scheduler:
  extraArgs:
    - {name: leader-elect-lease-duration, value: 137s}
    - {name: leader-elect-renew-deadline, value: 107s}
    - {name: leader-elect-retry-period, value: 26s}
---
# Images are pulled three at a time instead of one after another, so that
# a small image (local-path's helper pod, which makes a volume) does not
# wait minutes behind a big one while pods wait for their volumes (the
# scheduler gives a volume 10 minutes). Every node takes this from the
# cluster's kubelet-config.
#
# A request to the container runtime may take 10 minutes instead of 2
# before the kubelet gives up on it. containerd stops what it was doing
# when the kubelet's request ends (StopPodSandbox: "context canceled"),
# and the kubelet asks again from the start: on an overloaded emulated
# worker a container's or a pod sandbox's stop took longer than 2 minutes
# every time, and the kubelet asked again for 40 and 55 minutes, while the
# pod stayed Running (a pod gets its final phase only once its sandbox is
# stopped: local-path's helper pod, done after 6 minutes, held back
# Harbor's registry volume for 46).
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: systemd
serializeImagePulls: false
maxParallelImagePulls: 3
runtimeRequestTimeout: 10m
---
# kube-proxy's IPVS mode alone resyncs on every Service or EndpointSlice
# change by default (minSyncPeriod 0): at most once a second instead, as
# its iptables and nftables modes do by default and kubespray sets for
# every mode, so a burst of endpoint changes (a release's pods starting
# and failing probes) costs one sync, not one each. An emulated worker's
# kube-proxy used half a vCPU in such a burst.
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: {{.ProxyMod}}
clusterCIDR: {{.PodCIDR}}
ipvs:
  minSyncPeriod: 1s
{{- end}}
`))

// controlPlanePatches are the control plane's static pods kubeadm patches
// (kubeadm --patches, probePatch): the API server's and etcd's liveness
// probes give up after 30 failed checks, 5 minutes, instead of 8, and the
// API server's leaves out its etcd check (/livez?exclude=etcd). On a busy
// or slow machine (a small VM, software emulation) etcd answers slowly for
// minutes at a time and the API server's /livez fails on its etcd check
// alone; kubeadm's probe then restarts the API server, whose start (its
// informers, the RBAC roles' reconciliation) loads the machine and etcd
// more, and it crash-looped and answered no one for the rest of a QEMU
// run. A restart of the API server does not make etcd faster (etcd has
// its own probe); a process that is truly stuck is still restarted. The
// controller manager's and the scheduler's probes give up after 5 minutes
// too: their /healthz fails while their leader lease cannot be renewed,
// which a slow etcd causes, and a restarted one first waits for the API
// server's /healthz (see apiServer above) and for the lease again.
//
// The readiness probes of the API server, etcd and the scheduler run every
// 10 s instead of every second (readinessPatched). Each is a request the
// kubelet makes afresh (the API server's and the scheduler's a TLS
// handshake), and the API server's /readyz and etcd's /readyz each read
// from etcd: work the machine does every second for nothing. An emulated
// 2-vCPU control plane used 1.73 vCPUs with nothing but Harbor's apply to
// do (its kubelet 0.44, the API server 0.42, the controller manager 0.27,
// etcd 0.21, the scheduler 0.14, all of which the probes keep busy in
// part). Nothing waits on these pods' Ready condition but people
// (kubeadm waits on the components' own endpoints), which now follows a
// change within 10 to 30 s.
var controlPlanePatches = []string{"kube-apiserver", "etcd", "kube-controller-manager", "kube-scheduler"}

// readinessPatched are the static pods kubeadm gives a readiness probe
// (the controller manager has none: a patch would add one without a
// handler, which the kubelet refuses).
var readinessPatched = []string{"kube-apiserver", "etcd", "kube-scheduler"}

// probePatch is the kubeadm patch of a static pod's probes (kubeadm names
// the pod's one container like the pod; a strategic merge keeps each
// probe's host, port and scheme).
func probePatch(container string) []byte {
	liveness := "{failureThreshold: 30}"
	if container == "kube-apiserver" {
		liveness = `{failureThreshold: 30, httpGet: {path: "/livez?exclude=etcd"}}`
	}
	readiness := slices.Contains(readinessPatched, container)
	what := "the liveness probe gives up after 5 minutes"
	if readiness {
		what += ", readiness is probed every 10 s"
	}
	b := fmt.Appendf(nil, `# Written by kpaas-agent: %s.
spec:
  containers:
    - name: %s
      livenessProbe: %s
`, what, container, liveness)
	if readiness {
		b = append(b, "      readinessProbe: {periodSeconds: 10}\n"...)
	}
	return b
}

const kubeletService = `# Written by kpaas-agent.
[Unit]
Description=kubelet: the Kubernetes node agent
Wants=network-online.target containerd.service
After=network-online.target containerd.service

[Service]
ExecStart=` + kubeletBinary + `
Restart=always
RestartSec=10
StartLimitInterval=0

[Install]
WantedBy=multi-user.target
`

// kubeletKubeadmDropIn is kubeadm's own drop-in: kubeadm writes the
// flags and the configuration it points at.
const kubeletKubeadmDropIn = `# Written by kpaas-agent (kubeadm's drop-in).
[Service]
Environment="KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf"
Environment="KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml"
EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env
EnvironmentFile=-/etc/default/kubelet
ExecStart=
ExecStart=` + kubeletBinary + ` $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS
`
