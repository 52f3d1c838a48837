package phases

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	cluster "kpaas.dev/appliance/api/cluster/v1alpha1"
	"kpaas.dev/appliance/internal/exec"
	"kpaas.dev/appliance/internal/retry"
)

// Names in the cluster.
const (
	// StatusAnnotation on each Node holds that node's agent status (JSON):
	// a node may annotate its own Node object with the kubelet's
	// credentials, so workers need no more than that.
	StatusAnnotation = "kpaas.dev/agent-status"
	// StatusNamespace and StatusConfigMap hold every node's status,
	// gathered by the control planes.
	StatusNamespace = "kpaas-system"
	StatusConfigMap = "kpaas-status"
	// tokenTTL is how long the bootstrap token stays valid after each
	// renewal by a control plane's agent.
	tokenTTL = 24 * time.Hour
)

// NodeStatus is one node's agent status in the cluster.
type NodeStatus struct {
	Node    string        `json:"node"`
	Role    string        `json:"role"`
	Phases  []PhaseStatus `json:"phases"`
	Updated time.Time     `json:"updated"`
	// SincePowerOn is the machine's uptime when the agent finished.
	SincePowerOn float64 `json:"sincePowerOnSeconds"`
	// DefaultRoute is the node's default route ("" when it has none: on a
	// closed network, nothing leaves the node's networks).
	DefaultRoute string `json:"defaultRoute"`
	// AgentMaxRSSKiB is the agent's peak resident memory in this run (its
	// own, not the commands it ran); SeedRSSKiB the seed service's
	// resident memory when the agent finished (0: unknown).
	AgentMaxRSSKiB int64 `json:"agentMaxRSSKiB"`
	SeedRSSKiB     int64 `json:"seedRSSKiB"`
	// Releases are the platform's releases (first control plane only).
	Releases []ReleaseStatus `json:"releases,omitempty"`
	// Harbor is the record of the bundle's push into Harbor (first
	// control plane only; see HarborRecord).
	Harbor map[string]string `json:"harbor,omitempty"`
}

// PhaseStatus is one phase in a NodeStatus.
type PhaseStatus struct {
	Name    string  `json:"name"`
	State   string  `json:"state"`
	Seconds float64 `json:"seconds"`
	// MaxRSSKiB is the agent's peak memory once the phase ran in this
	// process (0: it did not run here, its check held).
	MaxRSSKiB int64 `json:"agentMaxRSSKiB,omitempty"`
}

// ready publishes the node's status into the cluster (its own Node's
// annotation; on control planes the gathered ConfigMap), keeps the
// bootstrap token valid on control planes, and prints the summary. It has
// no Check: it runs on every boot.
func ready() Phase {
	return Phase{
		Name: "ready",
		Plan: func(e *Env) []string {
			p := []string{"kubectl annotate node " + e.Node.Name + " " + StatusAnnotation + "=<this node's phases and durations>"}
			if e.IsControlPlane() {
				p = append(p,
					fmt.Sprintf("keep the bootstrap token valid for %s more (kubeadm token create, or renew its expiry)", tokenTTL),
					"kubectl apply ConfigMap "+StatusNamespace+"/"+StatusConfigMap+" with every node's status")
			}
			return append(p, "print the summary")
		},
		Run: func(ctx context.Context, e *Env) error {
			st := e.nodeStatus()
			if out, err := e.Host.Run(ctx, "ip", "-4", "route", "show", "default"); err == nil {
				st.DefaultRoute = strings.TrimSpace(string(out))
			}
			st.AgentMaxRSSKiB = e.maxRSS()
			st.SeedRSSKiB = seedRSS(ctx, e)
			if e.IsFirstControlPlane() && e.Lock.Platform != nil {
				st.Releases, _ = ReleaseStatuses(ctx, e)
				st.Harbor = HarborStatus(ctx, e)
			}
			b, err := json.Marshal(st)
			if err != nil {
				return err
			}
			if _, err := e.Host.Run(ctx, "kubectl", "--kubeconfig", kubeletConf, "annotate", "node", e.Node.Name, "--overwrite",
				StatusAnnotation+"="+string(b)); err != nil {
				return retry.Retryable(err)
			}
			if e.IsControlPlane() {
				if err := RenewToken(ctx, e); err != nil {
					return retry.Retryable(err)
				}
				if err := PublishStatus(ctx, e); err != nil {
					return retry.Retryable(err)
				}
			}
			e.Progress.Printf("kpaas-agent: node %s (%s) ready: API https://%s, %s since power-on",
				e.Node.Name, e.Node.Role, e.Cluster.ControlPlaneEndpoint.String(), round1(st.SincePowerOn))
			printPlatform(e, st.Releases)
			if !e.IsFirstControlPlane() && e.Lock.Platform != nil {
				e.Progress.Printf("  %s", PlatformProgress(ctx, e))
			}
			if h := st.Harbor; h != nil {
				e.Progress.Printf("  harbor: %s (%s artifacts, Harbor %s); %s images and %s charts of the bundle at %s (public projects %s); docker login with user admin",
					h["state"], h["ended"], h["health"], h["images"], h["charts"], h["url"], h["projects"])
			}
			return nil
		},
		Retry: retry.Policy{Attempts: 5, Base: 5 * time.Second, Max: 30 * time.Second},
	}
}

func round1(s float64) string { return (time.Duration(s*10) * time.Second / 10).String() }

func (e *Env) nodeStatus() NodeStatus {
	st := NodeStatus{Node: e.Node.Name, Role: e.Node.Role, Updated: e.now().UTC().Truncate(time.Second), SincePowerOn: e.uptime()}
	if e.Journal != nil {
		for _, p := range e.Journal.Phases {
			st.Phases = append(st.Phases, PhaseStatus{Name: p.Name, State: string(p.State), Seconds: p.Seconds, MaxRSSKiB: e.peakAfter(p.Name)})
		}
	}
	return st
}

// uptime is the machine's time since power-on, in seconds.
func (e *Env) uptime() float64 {
	b, err := e.Host.ReadFile("/proc/uptime")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// RenewToken makes sure the cluster's bootstrap token (the one on every
// config disk) exists and stays valid for another tokenTTL, so that a
// worker added months later joins with the same config disk. Control
// planes call it on every agent run and from the daily timer.
func RenewToken(ctx context.Context, e *Env) error {
	token, err := readSecret(e, cluster.Token)
	if err != nil {
		return err
	}
	id, _, ok := strings.Cut(token, ".")
	if !ok {
		return fmt.Errorf("the config disk's %s is not a bootstrap token", cluster.Token)
	}
	expiry := e.now().Add(tokenTTL).UTC().Format(time.RFC3339)
	secret := "bootstrap-token-" + id
	if _, err := e.Host.Run(ctx, "kubectl", "--kubeconfig", adminConf, "-n", "kube-system", "get", "secret", secret, "-o", "name"); err == nil {
		_, err = e.Host.Run(ctx, "kubectl", "--kubeconfig", adminConf, "-n", "kube-system", "patch", "secret", secret,
			"--type", "merge", "-p", `{"stringData":{"expiration":"`+expiry+`"}}`)
		return err
	}
	c := exec.Command("kubeadm", "token", "create", token, "--ttl", tokenTTL.String(), "--kubeconfig", adminConf,
		"--description", "kpaas: node joins; kept valid by the control planes' agents")
	c.Secret = true
	_, err = e.Host.RunCmd(ctx, c)
	return err
}

// PublishStatus gathers every node's status annotation into the
// kpaas-system/kpaas-status ConfigMap (one key per node).
func PublishStatus(ctx context.Context, e *Env) error {
	out, err := e.Host.Run(ctx, "kubectl", "--kubeconfig", adminConf, "get", "nodes", "-o", "json")
	if err != nil {
		return err
	}
	var list struct {
		Items []struct {
			Metadata struct {
				Name        string            `json:"name"`
				Annotations map[string]string `json:"annotations"`
			} `json:"metadata"`
		} `json:"items"`
	}
	if err := json.Unmarshal(out, &list); err != nil {
		return fmt.Errorf("kubectl get nodes: %w", err)
	}
	data := map[string]string{}
	for _, n := range list.Items {
		if s, ok := n.Metadata.Annotations[StatusAnnotation]; ok {
			data[n.Metadata.Name+".json"] = s
		}
	}
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	doc := map[string]any{
		"apiVersion": "v1", "kind": "List",
		"items": []any{
			map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": StatusNamespace}},
			map[string]any{"apiVersion": "v1", "kind": "ConfigMap",
				"metadata": map[string]any{"name": StatusConfigMap, "namespace": StatusNamespace},
				"data":     data},
		},
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	c := exec.Command("kubectl", append([]string{"--kubeconfig", adminConf}, applyArgs("-")...)...)
	c.Stdin = b
	_, err = e.Host.RunCmd(ctx, c)
	return err
}

// seedRSS is the seed service's resident memory in KiB (VmRSS of its main
// process), or 0.
func seedRSS(ctx context.Context, e *Env) int64 {
	out, err := e.Host.Run(ctx, "systemctl", "show", "--property", "MainPID", "--value", SeedUnitName)
	if err != nil {
		return 0
	}
	pid := strings.TrimSpace(string(out))
	if pid == "" || pid == "0" {
		return 0
	}
	b, err := e.Host.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// printPlatform ends the summary with the platform: each release's state
// and duration, the URLs an operator opens, and where the passwords are.
func printPlatform(e *Env, rs []ReleaseStatus) {
	if len(rs) == 0 {
		return
	}
	for _, r := range rs {
		state := r.State
		if state == "" {
			state = "not installed yet"
		}
		line := fmt.Sprintf("  release %-20s %-9s %6.1fs", r.Name, state, r.Seconds)
		if r.URL != "" {
			line += "  " + r.URL
		}
		e.Progress.Printf("%s", line)
	}
	if p := e.Lock.Platform; p != nil && len(p.Secrets) > 0 {
		var names []string
		for _, s := range p.Secrets {
			names = append(names, s.Namespace+"/"+s.Name)
		}
		e.Progress.Printf("  passwords: the Secrets %s; on the operator's machine: kpaas cluster secrets DIR --show NAME", strings.Join(names, ", "))
	}
	p, _ := sitePlatform(e)
	if p == nil {
		return
	}
	for _, r := range p.Releases {
		if r.Vault {
			e.Progress.Printf("  vault %s: unseal key and root token in %s on %s (root only)", r.Name, vaultFile(r), e.Node.Name)
		}
	}
}

// PlatformProgress is one line on the platform for a node other than the
// first control plane, which installs it: each release's state as its
// record in the cluster says (read with the kubelet's credentials).
func PlatformProgress(ctx context.Context, e *Env) string {
	by := "the first control plane"
	if fcp := e.Cluster.FirstControlPlane(); fcp != nil {
		by += " " + fcp.Name
	}
	rs, err := ReleaseStatuses(ctx, e)
	if err != nil {
		why := "it has not started yet"
		if msg := err.Error(); !strings.Contains(msg, "Forbidden") {
			// Not the missing grant: say what (kubectl's last line).
			lines := strings.Split(strings.TrimSpace(msg), "\n")
			why = lines[len(lines)-1]
		}
		return fmt.Sprintf("platform: installed by %s; its progress is not readable yet (%s)", by, why)
	}
	var parts []string
	done := 0
	for _, r := range rs {
		state := r.State
		switch state {
		case "":
			state = "not installed yet"
		case ReleaseDeployed:
			done++
		}
		parts = append(parts, r.Name+" "+state)
	}
	return fmt.Sprintf("platform: installed by %s; %d of %d releases deployed (%s); kpaas-agent status shows it again", by, done, len(rs), strings.Join(parts, ", "))
}
