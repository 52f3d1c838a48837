package v1alpha1

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// String returns host:port, the form kubeadm's controlPlaneEndpoint and a
// kubeconfig's server URL take.
func (e Endpoint) String() string {
	return net.JoinHostPort(e.Host, strconv.Itoa(e.Port))
}

// Prefix returns the node's address with its prefix, parsed.
func (n *Node) Prefix() (netip.Prefix, error) {
	p, err := netip.ParsePrefix(n.Address)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("node %s: address: %w", n.Name, err)
	}
	return p, nil
}

// FirstControlPlane returns the first node with role control-plane in the
// list: the one that runs kubeadm init (the others join it). It is nil only
// for a configuration that fails Validate.
func (c *Cluster) FirstControlPlane() *Node {
	for i := range c.Nodes {
		if c.Nodes[i].Role == RoleControlPlane {
			return &c.Nodes[i]
		}
	}
	return nil
}

// FindNode returns the entry of the machine the agent runs on, trying in
// this order:
//
//  1. macs, the hardware addresses of the machine's NICs (any case): the
//     node that lists one of them. MACs identify hardware, so they win over
//     names, which an installed system or an operator may have changed.
//  2. hostname: the node of that name (the hostname a previous boot set).
//  3. cmdlineNode, the value of the kpaas.node= kernel argument: the node
//     of that name, for machines whose MACs are not known in advance (VMs
//     cloned from one image, say).
//
// Empty arguments are skipped. MACs that match two different nodes are an
// error, as is no match at all; the error lists what was tried.
func (c *Cluster) FindNode(macs []string, hostname, cmdlineNode string) (*Node, error) {
	var tried []string
	var found *Node
	for _, m := range macs {
		m = strings.ToLower(m)
		if m == "" {
			continue
		}
		tried = append(tried, m)
		for i := range c.Nodes {
			n := &c.Nodes[i]
			for _, nm := range n.MACs {
				if !strings.EqualFold(nm, m) {
					continue
				}
				if found != nil && found != n {
					return nil, fmt.Errorf("cluster %s: this machine's MACs match two nodes, %s and %s", c.Metadata.Name, found.Name, n.Name)
				}
				found = n
			}
		}
	}
	if found != nil {
		return found, nil
	}
	for _, name := range []string{hostname, cmdlineNode} {
		if name == "" {
			continue
		}
		for i := range c.Nodes {
			if c.Nodes[i].Name == name {
				return &c.Nodes[i], nil
			}
		}
	}
	macList := "none"
	if len(tried) > 0 {
		macList = strings.Join(tried, ", ")
	}
	return nil, fmt.Errorf("cluster %s: no node matches this machine (MACs tried: %s; hostname %q; kpaas.node=%q): add one to %s with one of these MACs, or boot with kpaas.node=NAME",
		c.Metadata.Name, macList, hostname, cmdlineNode, ClusterFile)
}
