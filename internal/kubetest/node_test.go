package kubetest

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestKubeletRegistersNode runs the built containerd (with CRI) and kubelet
// against a kubetest control plane: the node registers and becomes Ready, and
// a static host-network pod of the built pause image runs.
func TestKubeletRegistersNode(t *testing.T) {
	env := Start(t, WithNode(""), WithLogs())

	// A static pod on the host network: no pod network needed to run it.
	os.WriteFile(filepath.Join(env.StaticPods, "pause.yaml"), []byte(`apiVersion: v1
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
	env.Eventually(120*time.Second, func() error {
		out, err := env.KubectlErr(nil, "-n", "kube-system", "get", "pod", "static-pause-"+NodeName, "-o", "jsonpath={.status.phase}")
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
