package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"kpaas.dev/appliance/agent/host"
	"kpaas.dev/appliance/agent/journal"
	"kpaas.dev/appliance/agent/phases"
	cluster "kpaas.dev/appliance/api/cluster/v1alpha1"
	"kpaas.dev/appliance/internal/bundle"
	"kpaas.dev/appliance/internal/exec"
	"kpaas.dev/appliance/internal/names"
	"kpaas.dev/appliance/internal/progress"
)

// options are the flags every command shares.
type options struct {
	root string
}

// Where the agent keeps its records.
const (
	journalFile = names.StateDir + "/journal.json"
	agentBinary = "/usr/bin/kpaas-agent"
)

func (o *options) host() *host.Host { return &host.Host{Root: o.root, Exec: exec.Host{}} }

func (o *options) journal() *journal.Journal {
	return journal.Open(path.Join(o.root, journalFile))
}

// errNoConfig says the node has no cluster configuration, or none that
// names it.
var errNoConfig = errors.New("no cluster configuration names this machine")

// loadEnv builds the phases' Env from the machine: the media's bundle and
// key, the cluster configuration, this node's entry and its NIC.
func loadEnv(h *host.Host, rep *progress.Reporter) (*phases.Env, error) {
	store, err := bundle.Open(h.Path(names.BundleDir))
	if err != nil {
		return nil, fmt.Errorf("the media's bundle: %w", err)
	}
	lock, err := store.ReadLock()
	if err != nil {
		return nil, fmt.Errorf("the media's bundle: %w", err)
	}
	e := &phases.Env{
		Host: h, Bundle: store, Lock: lock, Progress: rep, AgentBinary: agentBinary,
		Probe: phases.HTTPProbe, Dial: phases.TCPDial, Now: time.Now,
	}
	if keyPath := h.Path(path.Join(names.ESPDir, names.ESPPublicKey)); fileExists(keyPath) {
		if e.PublicKey, err = bundle.LoadPublicKey(keyPath); err != nil {
			return nil, fmt.Errorf("the media's public key: %w", err)
		}
	}
	cfgPath := path.Join(names.ConfigDir, cluster.ClusterFile)
	if !h.Exists(cfgPath) {
		return e, fmt.Errorf("%w: %s is missing", errNoConfig, cfgPath)
	}
	c, err := cluster.ParseFile(h.Path(cfgPath))
	if err != nil {
		return e, err
	}
	e.Cluster = c
	nics, err := h.NICs()
	if err != nil {
		return e, err
	}
	var macs []string
	for _, n := range nics {
		macs = append(macs, n.MAC)
	}
	node, err := c.FindNode(macs, h.Hostname(), h.CmdlineValue("kpaas.node"))
	if err != nil {
		return e, fmt.Errorf("%w: %v", errNoConfig, err)
	}
	e.Node = node
	e.NIC, err = nicFor(node, nics)
	if err != nil {
		return e, err
	}
	if sd := path.Join(names.ConfigDir, cluster.SecretsDir); h.Exists(sd) {
		e.SecretsDir = sd
	}
	return e, nil
}

// nicFor picks the interface the node's address goes on: the one with the
// node's first MAC, or the first interface when the entry lists none.
func nicFor(n *cluster.Node, nics []host.NIC) (string, error) {
	for _, m := range n.MACs {
		for _, nic := range nics {
			if strings.EqualFold(nic.MAC, m) {
				return nic.Name, nil
			}
		}
	}
	if len(n.MACs) == 0 && len(nics) > 0 {
		return nics[0].Name, nil
	}
	return "", fmt.Errorf("node %s: none of its MACs %v is on this machine", n.Name, n.MACs)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// waitForConfig waits until the machine has a cluster configuration that
// names it: it prints the machine's MACs on the console (so an operator
// can add the node), and mounts a config disk labelled KPAAS-CONFIG when
// one is attached later.
func waitForConfig(ctx context.Context, h *host.Host, rep *progress.Reporter, why error, mounted map[string]bool) error {
	last := time.Time{}
	for {
		if time.Since(last) >= time.Minute {
			last = time.Now()
			nics, _ := h.NICs()
			var ms []string
			for _, n := range nics {
				ms = append(ms, n.Name+"="+n.MAC)
			}
			rep.Errorf("kpaas-agent: waiting for a config disk (%s): %v; this machine's NICs: %s", names.PartConfig, why, strings.Join(ms, " "))
		}
		if ok, err := mountConfigDisk(ctx, h, mounted); err != nil {
			return err
		} else if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Second):
		}
	}
}

// mountConfigDisk mounts a newly attached config disk read-only at the
// config folder, closed to everyone but root. mounted records the devices
// mounted before, which are not mounted again.
func mountConfigDisk(ctx context.Context, h *host.Host, mounted map[string]bool) (bool, error) {
	for _, dev := range []string{"/dev/disk/by-partlabel/" + names.PartConfig, "/dev/disk/by-label/" + names.PartConfig} {
		real, err := filepath.EvalSymlinks(h.Path(dev))
		if err != nil || mounted[real] {
			continue
		}
		mounted[real] = true
		h.Run(ctx, "umount", names.ConfigDir) // the ESP's cluster.yaml bind, if any
		if err := os.MkdirAll(h.Path(names.ConfigDir), 0o700); err != nil {
			return false, err
		}
		if _, err := h.Run(ctx, "mount", "-o", "ro,uid=0,gid=0,fmask=0177,dmask=0077", dev, names.ConfigDir); err != nil {
			return false, err
		}
		return true, nil
	}
	return false, nil
}
