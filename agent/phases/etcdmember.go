package phases

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"kpaas.dev/appliance/internal/exec"
	"kpaas.dev/appliance/internal/retry"
)

// A further control plane's etcd member, and what the agent may do when
// its `kubeadm join` did not finish.
//
// kubeadm 1.35 adds the node's etcd member as a learner, starts it, then
// promotes it to a voting member, retrying the promotion until its etcd
// timeout. On a slow machine a promotion can succeed in etcd after the
// client gave up waiting: every retry is then refused ("can only promote
// a learner member") and the join fails although the member votes. Two
// voting members need both for a quorum: resetting that node (which stops
// its etcd) would take the whole cluster's API down with it. So a further
// control plane whose join failed or was interrupted asks etcd first:
//   - no member: reset and join again;
//   - a learner (learners do not vote): remove it (a reset may leave it,
//     and the next join would take it up), reset and join again;
//   - a voting member: finish the join's remaining steps, never reset;
//   - etcd cannot be asked: wait and ask again, never reset.

// memberState is what etcd says of this node's member.
type memberState int

const (
	memberUnknown memberState = iota // etcd could not be asked
	memberAbsent
	memberLearner
	memberVoting
)

func (s memberState) String() string {
	return [...]string{"unknown", "absent", "a learner", "a voting member"}[s]
}

// Files of a control plane's etcd.
const (
	etcdManifest   = manifestsDir + "/etcd.yaml"
	etcdCA         = pkiDir + "/etcd/ca.crt"
	etcdClientCert = pkiDir + "/etcd/healthcheck-client.crt"
	etcdClientKey  = pkiDir + "/etcd/healthcheck-client.key"
	kubeletConfig  = "/var/lib/kubelet/config.yaml"
)

// etcdctl is an etcdctl command line run inside an etcd container (the
// image carries it; the pod mounts the etcd certificates at the same
// paths), talking to that container's etcd.
func etcdctl(args ...string) []string {
	return append([]string{"etcdctl", "--endpoints=https://127.0.0.1:2379",
		"--cacert=" + etcdCA, "--cert=" + etcdClientCert, "--key=" + etcdClientKey,
		"--command-timeout=15s"}, args...)
}

var memberList = etcdctl("member", "list", "-w", "json")

// etcdMember asks etcd about this node's member, found by its peer URL,
// and says its ID (hex, as etcdctl takes it): through the first control
// plane's etcd pod (over the API), else through the node's own etcd
// container (when the API has no quorum without it). etcdctl's member
// list is linearizable: without a quorum it fails rather than answer from
// one member's view. An error says etcd could not be asked.
func etcdMember(ctx context.Context, e *Env) (memberState, string, error) {
	var tries []string
	// A voting member's answer first: a learner's own view may be stale.
	if e.Host.Exists(adminConf) {
		out, err := execFirstEtcd(ctx, e, memberList...)
		if err == nil {
			return memberIn(out, e)
		}
		tries = append(tries, "etcd-"+e.Cluster.FirstControlPlane().Name+": "+err.Error())
	}
	if out, err := e.Host.Run(ctx, "crictl", "ps", "--name", "^etcd$", "-q"); err == nil {
		if id, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n"); id != "" {
			out, err := e.Host.Run(ctx, "crictl", append([]string{"exec", id}, memberList...)...)
			if err == nil {
				return memberIn(out, e)
			}
			tries = append(tries, "this node's etcd: "+err.Error())
		} else {
			tries = append(tries, "this node's etcd: not running")
		}
	} else {
		tries = append(tries, "crictl: "+err.Error())
	}
	return memberUnknown, "", fmt.Errorf("etcd could not be asked about %s's member (%s)", e.Node.Name, strings.Join(tries, "; "))
}

// execFirstEtcd runs a command in the first control plane's etcd pod,
// with this node's admin credentials (a joining control plane has them).
func execFirstEtcd(ctx context.Context, e *Env, cmd ...string) ([]byte, error) {
	pod := "etcd-" + e.Cluster.FirstControlPlane().Name
	return e.Host.Run(ctx, "kubectl", append([]string{"--kubeconfig", adminConf, "-n", "kube-system", "exec", pod, "--"}, cmd...)...)
}

// memberIn finds this node's member in `etcdctl member list -w json`.
func memberIn(out []byte, e *Env) (memberState, string, error) {
	var list struct {
		Members []struct {
			ID        uint64   `json:"ID"`
			PeerURLs  []string `json:"peerURLs"`
			IsLearner bool     `json:"isLearner"`
		} `json:"members"`
	}
	if err := json.Unmarshal(out, &list); err != nil {
		return memberUnknown, "", fmt.Errorf("etcdctl member list: %w", err)
	}
	peer := "https://" + net.JoinHostPort(nodeIP(e.Node), strconv.Itoa(2380))
	for _, m := range list.Members {
		if !slices.Contains(m.PeerURLs, peer) {
			continue
		}
		id := strconv.FormatUint(m.ID, 16)
		if m.IsLearner {
			return memberLearner, id, nil
		}
		return memberVoting, id, nil
	}
	return memberAbsent, "", nil
}

// rescueJoin looks after a further control plane whose join failed or
// was interrupted: when its etcd member votes it finishes the join
// (finished); when etcd cannot be asked it says so (a retryable error).
// Otherwise the node may be reset and joined again.
func rescueJoin(ctx context.Context, e *Env, token string) (finished bool, err error) {
	if !e.IsControlPlane() || e.IsFirstControlPlane() {
		return false, nil
	}
	// Without its manifest the node's etcd never ran, so its member (if
	// the join added one) cannot vote: it is only looked for to remove.
	ran := e.Host.Exists(etcdManifest)
	if !ran && !e.Host.Exists(adminConf) {
		return false, nil
	}
	// What the node's own etcd and API server do: the console is the
	// operator's only window.
	if cs := controlPlaneState(ctx, e); cs != "" {
		e.Progress.Printf("kubeadm: on this node: %s", cs)
	}
	st, id, err := etcdMember(ctx, e)
	if err != nil && !ran {
		e.Progress.Printf("kubeadm: %v; its etcd never ran here: resetting", err)
		return false, nil
	}
	if err != nil {
		// The kubelet runs this node's etcd again (the quorum may need
		// it): then it can be asked.
		if e.Host.Exists(kubeletConfig) {
			e.Host.Run(ctx, "systemctl", "start", "kubelet")
		}
		return false, retry.Retryable(fmt.Errorf("%w: not resetting a control plane whose etcd member may vote", err))
	}
	e.Progress.Printf("kubeadm: this node's etcd member is %s", st)
	switch st {
	case memberVoting:
		return true, finishJoin(ctx, e, token)
	case memberLearner:
		// kubeadm reset is meant to remove it but may not manage (it
		// needs the API). A learner left behind would be taken up again
		// by the next join with its old progress, and the new, empty etcd
		// would crash on the leader's first message ("tocommit out of
		// range"), again and again (seen under QEMU).
		e.Progress.Printf("kubeadm: removing the learner %s before joining again", id)
		if _, err := execFirstEtcd(ctx, e, etcdctl("member", "remove", id)...); err != nil {
			return false, retry.Retryable(fmt.Errorf("removing this node's etcd learner %s: %w", id, err))
		}
	}
	return false, nil
}

// finishJoin runs what a control plane's `kubeadm join` does after its
// etcd member joined: wait for the kubelet's TLS bootstrap, label and
// taint the node as a control plane, wait for this node's API server
// (kubeadm's wait-control-plane step cannot run on its own).
func finishJoin(ctx context.Context, e *Env, token string) error {
	e.Progress.Printf("kubeadm: finishing the join (its etcd member votes already: resetting this node would stop it and take the quorum)")
	for _, ph := range [][]string{{"kubelet-wait-bootstrap"}, {"control-plane-join", "mark-control-plane"}} {
		c := exec.Command("kubeadm", append(append([]string{"join", "phase"}, ph...), "--config", kubeadmConfig)...)
		c.Redact = []string{token}
		c.Progress, c.ProgressPrefix = e.Progress.Writer(), "kubeadm: "
		if _, err := e.Host.RunCmd(ctx, c); err != nil {
			return retry.Retryable(err)
		}
	}
	server := "https://" + net.JoinHostPort(nodeIP(e.Node), strconv.Itoa(e.Cluster.ControlPlaneEndpoint.Port))
	var last error
	if err := e.waitFor(ctx, "this node's API server at "+server, kubeadmBootWait, func() bool {
		_, last = e.Host.Run(ctx, "kubectl", "--kubeconfig", adminConf, "--server", server, "get", "--raw", "/readyz")
		return last == nil
	}); err != nil {
		return fmt.Errorf("%w: %v", err, last)
	}
	return nil
}
