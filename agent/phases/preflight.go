package phases

import (
	"context"
	"fmt"
	"strings"

	cluster "kpaas.dev/appliance/api/cluster/v1alpha1"
	"kpaas.dev/appliance/internal/bundle"
	"kpaas.dev/appliance/internal/progress"
)

// Minimums of the host checks (kubeadm's own preflight refuses a control
// plane with fewer than 2 CPUs or 1700 MB of memory).
const (
	minCPUsControlPlane = 2
	minMemControlPlane  = 1700 << 20
	minMemWorker        = 1 << 30
	minFreeVar          = 2 << 30
)

// preflight refuses to touch the host when the bundle or the machine is
// not fit: the bundle's signature against the media's key, its metadata
// and manifests against their digests, memory, CPUs, disk and clock. It has
// no Check: it runs on every boot.
func preflight() Phase {
	return Phase{
		Name: "preflight",
		Plan: func(e *Env) []string {
			sig := "check the bundle's signature with the media's key " + keyName(e)
			if e.PublicKey == nil {
				sig = "no public key on the media: the bundle's signature is NOT checked"
			}
			return []string{
				sig,
				"check the bundle's metadata, manifests and blob sizes against their digests",
				fmt.Sprintf("check memory, CPUs, free space on /var and the clock for a %s", e.Node.Role),
			}
		},
		Run: func(ctx context.Context, e *Env) error {
			if e.PublicKey == nil {
				e.Progress.Errorf("WARNING: these media carry no public key: the bundle's signature is NOT checked (build the media with --key)")
			}
			if err := e.Bundle.VerifyOnMedia(ctx, e.PublicKey); err != nil {
				return fmt.Errorf("the bundle on the media failed verification, refusing to install from it: %w", err)
			}
			if e.PublicKey != nil {
				e.Progress.Printf("preflight: bundle %s %s signed by key %s", e.Lock.Name, e.Lock.Version, keyName(e))
			}
			return hostChecks(e)
		},
	}
}

func keyName(e *Env) string {
	if e.PublicKey == nil {
		return "(none)"
	}
	return bundle.Fingerprint(e.PublicKey)
}

// hostChecks lists every shortfall of the machine at once.
func hostChecks(e *Env) error {
	var probs []string
	minMem := int64(minMemWorker)
	if e.Node.Role == cluster.RoleControlPlane {
		minMem = minMemControlPlane
		if n, err := e.Host.CPUs(); err != nil {
			probs = append(probs, err.Error())
		} else if n < minCPUsControlPlane {
			probs = append(probs, fmt.Sprintf("%d CPU, a control plane needs %d", n, minCPUsControlPlane))
		}
	}
	if m, err := e.Host.MemTotal(); err != nil {
		probs = append(probs, err.Error())
	} else if m < minMem {
		probs = append(probs, fmt.Sprintf("memory %s, a %s needs %s", progress.Bytes(m), e.Node.Role, progress.Bytes(minMem)))
	}
	if free, err := e.Host.FreeBytes("/var"); err != nil {
		probs = append(probs, err.Error())
	} else if free < minFreeVar {
		probs = append(probs, fmt.Sprintf("/var has %s free, the node needs %s (is KPAAS-STATE on a large enough disk?)", progress.Bytes(free), progress.Bytes(minFreeVar)))
	}
	if built := e.Bundle.Created(); !built.IsZero() && e.now().Before(built) {
		probs = append(probs, fmt.Sprintf("the clock says %s, before the bundle was built (%s): set the clock or configure NTP, TLS fails with a wrong clock",
			e.now().UTC().Format("2006-01-02 15:04"), built.UTC().Format("2006-01-02 15:04")))
	}
	if len(probs) > 0 {
		return fmt.Errorf("node %s is not fit: %s", e.Node.Name, strings.Join(probs, "; "))
	}
	return nil
}
