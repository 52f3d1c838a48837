package phases

import (
	"bytes"
	"context"
	"encoding/json"
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
			return podNetworkConfigured(e) && nodeReady(ctx, e), nil
		},
		Run: func(ctx context.Context, e *Env) error {
			// The CNI configuration is written once: kube-router then adds
			// the node's pod CIDR to it, and that edit must stay.
			if !cniConfValid(e) {
				if _, err := e.writeFiles(networkFiles()); err != nil {
					return err
				}
			}
			if e.IsFirstControlPlane() {
				ms, err := e.Host.Glob(NetworkManifests + "/*.yaml")
				if err != nil {
					return err
				}
				if len(ms) == 0 {
					return fmt.Errorf("the media carry no pod network manifests in %s (a bundle file artifact with that target)", NetworkManifests)
				}
				// After a power cut the API server answers before it is
				// ready: its authoriser refuses even the admin (Forbidden)
				// until its caches are filled. Seen under QEMU: three
				// applies in 45 s failed so, and the agent exited.
				if err := e.waitFor(ctx, "the API server to be ready (/readyz)", 600, func() bool { return apiReady(ctx, e) }); err != nil {
					return err
				}
				if _, err := e.Host.Run(ctx, "kubectl", append([]string{"--kubeconfig", adminConf}, applyArgs(NetworkManifests)...)...); err != nil {
					return retry.Retryable(err)
				}
			}
			if err := e.waitFor(ctx, "the pod network (kube-router) to configure this node's pod CIDR in "+cniConfFile, 900,
				func() bool { return podNetworkConfigured(e) }); err != nil {
				return err
			}
			return e.waitFor(ctx, "node "+e.Node.Name+" to be Ready", 600, func() bool { return nodeReady(ctx, e) })
		},
		Retry: retry.Policy{Attempts: 3, Base: 10 * time.Second, Max: 30 * time.Second},
	}
}

func networkFiles() []file { return []file{{cniConfFile, 0o644, []byte(cniConf)}} }

// apiReady reports whether the API server says it is ready (every
// post-start hook run, its informers synced), asked as the admin.
func apiReady(ctx context.Context, e *Env) bool {
	_, err := e.Host.Run(ctx, "kubectl", "--kubeconfig", adminConf, "get", "--raw", "/readyz")
	return err == nil
}

// cniConf is the part of a CNI configuration list the phase reads.
type cniConfList struct {
	Plugins []struct {
		Type string `json:"type"`
		IPAM struct {
			Subnet string `json:"subnet"`
			Ranges [][]struct {
				Subnet string `json:"subnet"`
			} `json:"ranges"`
		} `json:"ipam"`
	} `json:"plugins"`
}

func readCNIConf(e *Env) (*cniConfList, bool) {
	b, err := e.Host.ReadFile(cniConfFile)
	if err != nil {
		return nil, false
	}
	var c cniConfList
	if json.Unmarshal(b, &c) != nil {
		return nil, false
	}
	for _, p := range c.Plugins {
		if p.Type == "bridge" {
			return &c, true
		}
	}
	return nil, false
}

// cniConfValid reports whether the CNI configuration exists with its
// bridge plugin (as written, or as kube-router completed it).
func cniConfValid(e *Env) bool {
	_, ok := readCNIConf(e)
	return ok
}

// podNetworkConfigured reports whether the pod network configured this
// node: kube-router added the node's pod CIDR to the bridge's IPAM.
func podNetworkConfigured(e *Env) bool {
	c, ok := readCNIConf(e)
	if !ok {
		return false
	}
	for _, p := range c.Plugins {
		if p.Type != "bridge" {
			continue
		}
		if p.IPAM.Subnet != "" {
			return true
		}
		for _, set := range p.IPAM.Ranges {
			for _, r := range set {
				if r.Subnet != "" {
					return true
				}
			}
		}
	}
	return false
}

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
