package v1alpha1

import (
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"
)

var dns1123Label = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// Validate checks the configuration against the schema's rules and returns
// a *ValidationError listing every problem, or nil. It expects defaults to
// be applied (see Default); positions are left zero, since a Cluster built
// in Go has none. Parse does the same checks and adds positions.
//
// The rules: apiVersion and kind; metadata.name a DNS label; the endpoint
// an IPv4 address or DNS name and a port in 1–65535, and when it is an
// address, one a control-plane node has; the networks IPv4 CIDRs that do
// not overlap each other or any node's network; proxyMode ipvs or
// iptables; the seed's port; at least one node and one control plane;
// node names, MACs and addresses unique; each address IPv4 with a prefix,
// the gateway inside it; DNS servers addresses, NTP servers addresses or
// names; platform.storage nfs or rook, with nfsServer for nfs.
func (c *Cluster) Validate() error {
	if ps := c.validate(); len(ps) > 0 {
		return &ValidationError{Problems: ps}
	}
	return nil
}

// problems collects problems without positions.
type problems []Problem

func (ps *problems) add(path, format string, args ...any) {
	*ps = append(*ps, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
}

// required reports path when v is empty and tells whether v is set.
func (ps *problems) required(path, v string) bool {
	if v == "" {
		ps.add(path, "required")
		return false
	}
	return true
}

func (ps *problems) label(path, v string) bool {
	switch {
	case len(v) > 63:
		ps.add(path, "%q is longer than 63 characters", v)
	case !dns1123Label.MatchString(v):
		ps.add(path, "%q is not a DNS-1123 label (lower case letters, digits and '-', starting and ending with a letter or digit)", v)
	default:
		return true
	}
	return false
}

// isDNSName tells whether s is a DNS name: dot-separated DNS labels, at
// most 253 characters, the last not all digits (so that a mistyped address
// like 10.0.0.300 is not taken for a name).
func isDNSName(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	labels := strings.Split(s, ".")
	for _, l := range labels {
		if len(l) > 63 || !dns1123Label.MatchString(l) {
			return false
		}
	}
	return strings.Trim(labels[len(labels)-1], "0123456789") != ""
}

// ipv4 parses an IPv4 address ("10.0.0.1", no zone, no IPv4-in-IPv6).
func ipv4(s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	return a, err == nil && a.Is4()
}

// cidr parses an IPv4 network with no host bits set.
func (ps *problems) cidr(path, s string) (netip.Prefix, bool) {
	p, err := netip.ParsePrefix(s)
	switch {
	case err != nil || !p.Addr().Is4():
		ps.add(path, "%q is not an IPv4 CIDR like 10.233.64.0/18", s)
	case p.Masked() != p:
		ps.add(path, "%q has host bits set (the network is %s)", s, p.Masked())
	default:
		return p, true
	}
	return netip.Prefix{}, false
}

func (ps *problems) port(path string, port int) {
	if port < 1 || port > 65535 {
		ps.add(path, "port %d is not in 1-65535", port)
	}
}

func (ps *problems) hostOrAddr(path, s string) {
	if _, ok := ipv4(s); !ok && !isDNSName(s) {
		ps.add(path, "%q is not an IPv4 address or a DNS name", s)
	}
}

// network is a CIDR the cluster uses and where it was set.
type network struct {
	path   string
	prefix netip.Prefix
}

func (c *Cluster) validate() []Problem {
	var ps problems
	if ps.required("apiVersion", c.APIVersion) && c.APIVersion != APIVersion {
		ps.add("apiVersion", "must be %q, not %q", APIVersion, c.APIVersion)
	}
	if ps.required("kind", c.Kind) && c.Kind != Kind {
		ps.add("kind", "must be %q, not %q", Kind, c.Kind)
	}
	if ps.required("metadata.name", c.Metadata.Name) {
		ps.label("metadata.name", c.Metadata.Name)
	}
	ep := c.ControlPlaneEndpoint
	if ps.required("controlPlaneEndpoint.host", ep.Host) {
		ps.hostOrAddr("controlPlaneEndpoint.host", ep.Host)
	}
	ps.port("controlPlaneEndpoint.port", ep.Port)

	var nets []network
	w := c.Networking
	if ps.required("networking.podCIDR", w.PodCIDR) {
		if p, ok := ps.cidr("networking.podCIDR", w.PodCIDR); ok {
			nets = append(nets, network{"networking.podCIDR", p})
		}
	}
	if ps.required("networking.serviceCIDR", w.ServiceCIDR) {
		if p, ok := ps.cidr("networking.serviceCIDR", w.ServiceCIDR); ok {
			nets = append(nets, network{"networking.serviceCIDR", p})
		}
	}
	if ps.required("networking.dnsDomain", w.DNSDomain) && !isDNSName(w.DNSDomain) {
		ps.add("networking.dnsDomain", "%q is not a DNS name", w.DNSDomain)
	}
	if ps.required("networking.proxyMode", w.ProxyMode) && w.ProxyMode != ProxyIPVS && w.ProxyMode != ProxyIPTables {
		ps.add("networking.proxyMode", "must be %q or %q, not %q", ProxyIPVS, ProxyIPTables, w.ProxyMode)
	}
	if len(nets) == 2 && nets[0].prefix.Overlaps(nets[1].prefix) {
		ps.add(nets[1].path, "%s overlaps %s %s", nets[1].prefix, nets[0].path, nets[0].prefix)
	}
	ps.port("seed.port", c.Seed.Port)

	ps.nodes(c.Nodes, nets)
	ps.endpoint(ep.Host, c.Nodes)
	ps.platform(c.Platform)
	return ps
}

func (ps *problems) nodes(nodes []Node, clusterNets []network) {
	if len(nodes) == 0 {
		ps.add("nodes", "required: at least one control-plane node")
		return
	}
	names := map[string]int{}
	macs := map[string]string{}
	addrs := map[netip.Addr]int{}
	controlPlanes := 0
	for i, n := range nodes {
		at := fmt.Sprintf("nodes[%d]", i)
		if ps.required(at+".name", n.Name) && ps.label(at+".name", n.Name) {
			if j, dup := names[n.Name]; dup {
				ps.add(at+".name", "duplicate node name %q (same as nodes[%d])", n.Name, j)
			} else {
				names[n.Name] = i
			}
		}
		if ps.required(at+".role", n.Role) {
			switch n.Role {
			case RoleControlPlane:
				controlPlanes++
			case RoleWorker:
			default:
				ps.add(at+".role", "must be %q or %q, not %q", RoleControlPlane, RoleWorker, n.Role)
			}
		}
		all := append([]string(nil), n.MACs...)
		all = append(all, n.ManagementMACs...)
		for j, m := range all {
			mat := fmt.Sprintf("%s.macs[%d]", at, j)
			if j >= len(n.MACs) {
				mat = fmt.Sprintf("%s.managementMACs[%d]", at, j-len(n.MACs))
			}
			hw, err := net.ParseMAC(m)
			if err != nil || len(hw) != 6 {
				ps.add(mat, "%q is not a MAC address like 52:54:00:12:34:56", m)
				continue
			}
			key := hw.String()
			if prev, dup := macs[key]; dup {
				ps.add(mat, "duplicate MAC %s (same as %s)", key, prev)
				continue
			}
			macs[key] = mat
		}
		if !ps.required(at+".address", n.Address) {
			continue
		}
		prefix, err := netip.ParsePrefix(n.Address)
		if err != nil || !prefix.Addr().Is4() || prefix.Bits() == 0 {
			ps.add(at+".address", "%q is not an IPv4 address with a prefix like 10.0.0.11/24", n.Address)
			continue
		}
		if j, dup := addrs[prefix.Addr()]; dup {
			ps.add(at+".address", "duplicate address %s (same as nodes[%d])", prefix.Addr(), j)
		} else {
			addrs[prefix.Addr()] = i
		}
		if prefix.Bits() < 31 && (prefix.Addr() == prefix.Masked().Addr() || prefix.Addr() == broadcast(prefix)) {
			ps.add(at+".address", "%s is the network's own or broadcast address", n.Address)
		}
		for _, cn := range clusterNets {
			if cn.prefix.Overlaps(prefix.Masked()) {
				ps.add(at+".address", "node network %s overlaps %s %s", prefix.Masked(), cn.path, cn.prefix)
			}
		}
		if n.Gateway != "" {
			gw, ok := ipv4(n.Gateway)
			switch {
			case !ok:
				ps.add(at+".gateway", "%q is not an IPv4 address", n.Gateway)
			case !prefix.Contains(gw):
				ps.add(at+".gateway", "%s is outside the node's network %s", gw, prefix.Masked())
			case gw == prefix.Addr():
				ps.add(at+".gateway", "%s is the node's own address", gw)
			}
		}
		for j, s := range n.DNS {
			// resolv.conf names servers by address only.
			if _, ok := ipv4(s); !ok {
				ps.add(fmt.Sprintf("%s.dns[%d]", at, j), "%q is not an IPv4 address", s)
			}
		}
		for j, s := range n.NTP {
			ps.hostOrAddr(fmt.Sprintf("%s.ntp[%d]", at, j), s)
		}
	}
	if controlPlanes == 0 {
		ps.add("nodes", "no node has role %q: one must run kubeadm init", RoleControlPlane)
	}
}

func broadcast(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	bits := p.Bits()
	for i := range 4 {
		for b := range 8 {
			if i*8+b >= bits {
				a[i] |= 0x80 >> b
			}
		}
	}
	return netip.AddrFrom4(a)
}

// endpoint checks that an endpoint given as an address is a control
// plane's: nothing else would answer there. A DNS name may point anywhere
// (a load balancer, a virtual address).
func (ps *problems) endpoint(host string, nodes []Node) {
	ip, ok := ipv4(host)
	if !ok || len(nodes) == 0 {
		return
	}
	for _, n := range nodes {
		if p, err := netip.ParsePrefix(n.Address); err == nil && p.Addr() == ip && n.Role == RoleControlPlane {
			return
		}
	}
	ps.add("controlPlaneEndpoint.host", "%s is not the address of a control-plane node (name a load balancer or virtual address by DNS name)", ip)
}

func (ps *problems) platform(p *Platform) {
	if p == nil {
		return
	}
	seen := map[string]bool{}
	for i, name := range p.Disable {
		at := fmt.Sprintf("platform.disable[%d]", i)
		switch {
		case name == "":
			ps.add(at, "is empty")
		case seen[name]:
			ps.add(at, "names %q twice", name)
		}
		seen[name] = true
	}
	switch p.Storage {
	case "", StorageRook:
	case StorageNFS:
		if ps.required("platform.nfsServer", p.NFSServer) {
			ps.hostOrAddr("platform.nfsServer", p.NFSServer)
		}
		return
	default:
		ps.add("platform.storage", "must be %q or %q, not %q", StorageNFS, StorageRook, p.Storage)
	}
	if p.NFSServer != "" {
		ps.add("platform.nfsServer", "set only with storage %q", StorageNFS)
	}
}
