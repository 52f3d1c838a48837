package phases_test

import (
	"strings"
	"testing"

	"kpaas.dev/appliance/agent/phases"
)

// joinCP2 runs every phase on cp2 of a cluster whose first control plane
// is up, its first kubeadm join failing as joinFails says (clusterState),
// and returns the machine, the cluster and the commands run.
func joinCP2(t *testing.T, joinFails string) (*machine, *clusterState, []string) {
	t.Helper()
	cs := upCluster()
	cs.joinFails = joinFails
	m := newMachine(t, "cp2", cs)
	if err := m.run(phases.List()); err != nil {
		t.Fatalf("%v\n%s", err, m.out)
	}
	return m, cs, m.fake.Lines()
}

// A second control plane joins: kubeadm join, nothing reset, the node
// labelled, the marker written.
func TestSecondControlPlaneJoins(t *testing.T) {
	_, cs, lines := joinCP2(t, "")
	if count(lines, "kubeadm join --config") != 1 || count(lines, "kubeadm reset") != 0 || count(lines, "crictl exec") != 0 {
		t.Errorf("commands:\n%s", strings.Join(lines, "\n"))
	}
	if !cs.labelled["cp2"] || cs.etcd["cp2"] != "voting" {
		t.Errorf("cluster: %+v", cs)
	}
}

// kubeadm 1.35 on a slow machine: the promotion of the learner succeeds in
// etcd after the client stopped waiting, every retry is refused, the join
// fails. The member votes: resetting the node would stop its etcd and the
// two-member cluster with it. The agent finishes the join instead.
func TestSecondControlPlanePromotionTimedOut(t *testing.T) {
	m, cs, lines := joinCP2(t, "voting")
	if n := count(lines, "kubeadm reset"); n != 0 {
		t.Errorf("kubeadm reset ran %d times on a voting member:\n%s", n, strings.Join(lines, "\n"))
	}
	for _, want := range []string{
		"kubeadm join phase kubelet-wait-bootstrap --config /etc/kpaas/kubeadm.yaml",
		"kubeadm join phase control-plane-join mark-control-plane --config /etc/kpaas/kubeadm.yaml",
		"kubectl --kubeconfig /etc/kubernetes/admin.conf --server https://10.0.0.12:6443 get --raw /readyz",
	} {
		if count(lines, want) != 1 {
			t.Errorf("%q ran %d times:\n%s", want, count(lines, want), strings.Join(lines, "\n"))
		}
	}
	if count(lines, "kubeadm join --config") != 1 {
		t.Errorf("kubeadm join ran %d times", count(lines, "kubeadm join --config"))
	}
	if !cs.up || !cs.labelled["cp2"] {
		t.Errorf("cluster up %v, cp2 labelled %v", cs.up, cs.labelled["cp2"])
	}
	// etcd asked in the first control plane's etcd pod.
	if count(lines, "kubectl --kubeconfig /etc/kubernetes/admin.conf -n kube-system exec etcd-cp1 -- etcdctl") != 1 || count(lines, "crictl exec") != 0 {
		t.Errorf("etcd asked how:\n%s", strings.Join(lines, "\n"))
	}
	if !strings.Contains(m.out.String(), "etcd member is a voting member") {
		t.Errorf("the console does not say why:\n%s", m.out)
	}
}

// The join stopped with the member still a learner (a learner does not
// vote): the learner removed (kubeadm reset may leave it, and the next
// join would take it up and crash), reset, join again.
func TestSecondControlPlaneLearnerIsReset(t *testing.T) {
	_, cs, lines := joinCP2(t, "learner")
	if count(lines, "kubeadm reset --force") != 1 || count(lines, "kubeadm join --config") != 2 ||
		count(lines, "kubectl --kubeconfig /etc/kubernetes/admin.conf -n kube-system exec etcd-cp1 -- etcdctl --endpoints=https://127.0.0.1:2379 --cacert=/etc/kubernetes/pki/etcd/ca.crt --cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt --key=/etc/kubernetes/pki/etcd/healthcheck-client.key --command-timeout=15s member remove 2") != 1 {
		t.Errorf("commands:\n%s", strings.Join(lines, "\n"))
	}
	if !cs.labelled["cp2"] || cs.etcd["cp2"] != "voting" {
		t.Errorf("cluster: %+v", cs)
	}
}

// A power cut after the member was promoted: on the next boot etcd cannot
// be asked at first (two voting members, one down: no quorum). The agent
// never resets; once etcd answers it finishes the join.
func TestSecondControlPlanePowerCutAfterPromotion(t *testing.T) {
	cs := upCluster()
	cs.joinFails = "voting"
	cs.etcdSilent = true
	m := newMachine(t, "cp2", cs)
	err := m.run(phases.List()[:5])
	if err == nil || !strings.Contains(err.Error(), "not resetting a control plane whose etcd member may vote") {
		t.Fatalf("err = %v\n%s", err, m.out)
	}
	m.powerCut()
	m.fake.Reset()
	cs.mu.Lock()
	cs.etcdSilent = false
	cs.mu.Unlock()
	// The first control plane's pod cannot be reached yet: the node's own
	// etcd container answers.
	m.state.execFails = true
	if err := m.run(phases.List()); err != nil {
		t.Fatalf("%v\n%s", err, m.out)
	}
	lines := m.fake.Lines()
	if count(lines, "kubeadm reset") != 0 || count(lines, "kubeadm join --config") != 0 || count(lines, "kubeadm join phase control-plane-join mark-control-plane") != 1 ||
		count(lines, "crictl exec 3f2a9c etcdctl") != 1 {
		t.Errorf("commands after the power cut:\n%s", strings.Join(lines, "\n"))
	}
	if !cs.up || !cs.labelled["cp2"] {
		t.Errorf("cluster up %v, cp2 labelled %v", cs.up, cs.labelled["cp2"])
	}
}
