package phases

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"kpaas.dev/appliance/internal/retry"
)

// Places of the network phase.
const (
	cniConfFile = cniConfDir + "/10-kuberouter.conflist"
	// NetworkManifests is where the bundle's pod network manifests land
	// in the root (file artifacts whose target is this folder); the first
	// control plane applies every *.yaml there.
	NetworkManifests = "/usr/share/kpaas/network"
)

// cniConf is kube-router's CNI configuration: a bridge with host-local
// addresses from the node's pod CIDR, which kube-router fills in.
const cniConf = `{
  "cniVersion": "0.3.0",
  "name": "kubernetes",
  "plugins": [
    {
      "name": "kubernetes",
      "type": "bridge",
      "bridge": "kube-bridge",
      "isDefaultGateway": true,
      "hairpinMode": true,
      "ipam": { "type": "host-local" }
    },
    { "type": "portmap", "capabilities": { "snat": true, "portMappings": true } }
  ]
}
`

// network brings the pod network up from the bundle: every node gets the
// CNI configuration, the first control plane applies the bundle's network
// manifests (kube-router), and each node waits until it is Ready.
func network() Phase {
	return Phase{
		Name: "network",
		Plan: func(e *Env) []string {
			p := filePlan(networkFiles())
			if e.IsFirstControlPlane() {
				p = append(p, "kubectl apply --server-side -f "+NetworkManifests+" (the bundle's pod network)")
			}
			return append(p, "wait until node "+e.Node.Name+" is Ready")
		},
		Check: func(ctx context.Context, e *Env) (bool, error) {
			return e.filesInPlace(networkFiles()) && nodeReady(ctx, e), nil
		},
		Run: func(ctx context.Context, e *Env) error {
			if _, err := e.writeFiles(networkFiles()); err != nil {
				return err
			}
			if e.IsFirstControlPlane() {
				ms, err := e.Host.Glob(NetworkManifests + "/*.yaml")
				if err != nil {
					return err
				}
				if len(ms) == 0 {
					return fmt.Errorf("the media carry no pod network manifests in %s (a bundle file artifact with that target)", NetworkManifests)
				}
				if _, err := e.Host.Run(ctx, "kubectl", "--kubeconfig", adminConf, "apply", "--server-side", "--force-conflicts",
					"--field-manager", "kpaas-agent", "-f", NetworkManifests); err != nil {
					return retry.Retryable(err)
				}
			}
			return e.waitFor(ctx, "node "+e.Node.Name+" to be Ready", 600, func() bool { return nodeReady(ctx, e) })
		},
		Retry: retry.Policy{Attempts: 3, Base: 10 * time.Second, Max: 30 * time.Second},
	}
}

func networkFiles() []file { return []file{{cniConfFile, 0o644, []byte(cniConf)}} }

// nodeReady asks the API, with the kubelet's own credentials, whether
// this node is Ready.
func nodeReady(ctx context.Context, e *Env) bool {
	if !e.Host.Exists(kubeletConf) {
		return false
	}
	out, err := e.Host.Run(ctx, "kubectl", "--kubeconfig", kubeletConf, "get", "node", e.Node.Name,
		"-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
	return err == nil && bytes.Equal(bytes.TrimSpace(out), []byte("True"))
}
