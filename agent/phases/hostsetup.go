package phases

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"strings"

	cluster "kpaas.dev/appliance/api/cluster/v1alpha1"
)

// The kernel settings every node needs.
var (
	// kernelModules: the overlay snapshotter, bridge netfilter for the pod
	// network, and the IPVS schedulers kube-proxy's ipvs mode uses.
	kernelModules = []string{"overlay", "br_netfilter", "ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_sh", "nf_conntrack"}
	sysctls       = [][2]string{
		{"net.ipv4.ip_forward", "1"},
		{"net.bridge.bridge-nf-call-iptables", "1"},
		{"net.bridge.bridge-nf-call-ip6tables", "1"},
		{"fs.inotify.max_user_instances", "8192"},
		{"fs.inotify.max_user_watches", "524288"},
	}
)

// Files of the host phase.
const (
	hostnameFile = "/etc/hostname"
	hostsFile    = "/etc/hosts"
	networkFile  = "/etc/systemd/network/10-kpaas.network"
	resolvFile   = "/etc/resolv.conf"
	sysctlFile   = "/etc/sysctl.d/90-kpaas.conf"
	modulesFile  = "/etc/modules-load.d/90-kpaas.conf"
	timesyncFile = "/etc/systemd/timesyncd.conf.d/90-kpaas.conf"
)

// hostSetup makes the machine this node: hostname, /etc/hosts naming
// every node, a static address on the node's NIC (systemd-networkd), the
// resolver, kernel modules and sysctls, swap off, and time sync.
func hostSetup() Phase {
	return Phase{
		Name: "host",
		Plan: func(e *Env) []string {
			p := filePlan(hostFiles(e))
			return append(p,
				"hostname "+e.Node.Name,
				"modprobe -a "+strings.Join(kernelModules, " "),
				"sysctl --system",
				"swapoff -a",
				"systemctl enable --now systemd-networkd systemd-timesyncd; networkctl reload",
				fmt.Sprintf("wait for %s on %s", e.Node.Address, e.NIC))
		},
		Check: func(ctx context.Context, e *Env) (bool, error) {
			if !e.filesInPlace(hostFiles(e)) || e.Host.Hostname() != e.Node.Name || swapOn(e) {
				return false, nil
			}
			if servesTime(e) {
				if _, err := e.Host.Run(ctx, "systemctl", "is-active", "--quiet", TimeserverUnitName); err != nil {
					return false, nil
				}
			}
			for _, m := range []string{"br_netfilter", "ip_vs"} {
				if !moduleLoaded(e, m) {
					return false, nil
				}
			}
			return addressUp(ctx, e)
		},
		Run: func(ctx context.Context, e *Env) error {
			if _, err := e.writeFiles(hostFiles(e)); err != nil {
				return err
			}
			for _, c := range [][]string{
				{"hostname", e.Node.Name},
				append([]string{"modprobe", "-a"}, kernelModules...),
				{"sysctl", "--system"},
				{"swapoff", "-a"},
				{"systemctl", "enable", "--now", "systemd-networkd", "systemd-timesyncd"},
				{"networkctl", "reload"},
				{"networkctl", "reconfigure", e.NIC},
				{"systemctl", "restart", "systemd-timesyncd"},
			} {
				if _, err := e.Host.Run(ctx, c[0], c[1:]...); err != nil {
					return err
				}
			}
			if servesTime(e) {
				for _, c := range [][]string{{"systemctl", "daemon-reload"}, {"systemctl", "enable", TimeserverUnitName}, {"systemctl", "restart", TimeserverUnitName}} {
					if _, err := e.Host.Run(ctx, c[0], c[1:]...); err != nil {
						return err
					}
				}
			}
			// networkd configures the address asynchronously.
			for i := 0; i < 30; i++ {
				if ok, err := addressUp(ctx, e); err != nil || ok {
					return err
				}
				if err := e.sleep(ctx, secondDur); err != nil {
					return err
				}
			}
			return fmt.Errorf("%s did not get %s within 30s (systemd-networkd: see networkctl status %s)", e.NIC, e.Node.Address, e.NIC)
		},
	}
}

func hostFiles(e *Env) []file {
	n := e.Node
	var hosts bytes.Buffer
	hosts.WriteString("# Written by kpaas-agent from the cluster configuration.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
	for _, o := range e.Cluster.Nodes {
		addr, _, _ := strings.Cut(o.Address, "/")
		fmt.Fprintf(&hosts, "%s\t%s\n", addr, o.Name)
	}
	// An endpoint given by name resolves to the first control plane
	// unless the site has DNS servers that know it.
	if ep := e.Cluster.ControlPlaneEndpoint.Host; !isIP(ep) && len(n.DNS) == 0 {
		if fcp := e.Cluster.FirstControlPlane(); fcp != nil {
			addr, _, _ := strings.Cut(fcp.Address, "/")
			fmt.Fprintf(&hosts, "%s\t%s\n", addr, ep)
		}
	}

	var nw bytes.Buffer
	nw.WriteString("# Written by kpaas-agent from the cluster configuration.\n[Match]\n")
	if len(n.MACs) > 0 {
		fmt.Fprintf(&nw, "MACAddress=%s\n", n.MACs[0])
	} else {
		fmt.Fprintf(&nw, "Name=%s\n", e.NIC)
	}
	fmt.Fprintf(&nw, "\n[Network]\nAddress=%s\n", n.Address)
	if n.Gateway != "" {
		fmt.Fprintf(&nw, "Gateway=%s\n", n.Gateway)
	}
	for _, d := range n.DNS {
		fmt.Fprintf(&nw, "DNS=%s\n", d)
	}
	nw.WriteString("LinkLocalAddressing=no\nIPv6AcceptRA=no\n")
	if n.Gateway == "" {
		// A closed network has no default route, yet the kernel must find a
		// route to a Service's virtual address before kube-proxy rewrites
		// it: the service network goes out of the node's NIC.
		fmt.Fprintf(&nw, "\n[Route]\nDestination=%s\nScope=link\n", e.Cluster.Networking.ServiceCIDR)
	}

	var sc bytes.Buffer
	for _, s := range sysctls {
		fmt.Fprintf(&sc, "%s = %s\n", s[0], s[1])
	}

	var ts bytes.Buffer
	ts.WriteString("# Written by kpaas-agent: the node's NTP servers, or else the first control plane.\n[Time]\n")
	fmt.Fprintf(&ts, "NTP=%s\n", strings.Join(ntpServers(e), " "))

	fs := []file{
		{hostnameFile, 0o644, []byte(n.Name + "\n")},
		{hostsFile, 0o644, hosts.Bytes()},
		{networkFile, 0o644, nw.Bytes()},
		{resolvFile, 0o644, resolvConf(e)},
		{sysctlFile, 0o644, sc.Bytes()},
		{modulesFile, 0o644, []byte(strings.Join(kernelModules, "\n") + "\n")},
		{timesyncFile, 0o644, ts.Bytes()},
	}
	if servesTime(e) {
		fs = append(fs, file{timeserverUnit, 0o644, []byte(fmt.Sprintf(timeserverService, e.AgentBinary, nodeIP(n)))})
	}
	for i, mac := range n.ManagementMACs {
		fs = append(fs, file{fmt.Sprintf(managementFile, i), 0o644, []byte(fmt.Sprintf(managementNetwork, mac))})
	}
	return fs
}

// The time server of the first control plane.
const (
	timeserverUnit = "/etc/systemd/system/kpaas-timeserver.service"
	// TimeserverUnitName is its systemd service.
	TimeserverUnitName = "kpaas-timeserver.service"
	timeserverService  = `# Written by kpaas-agent: this node's clock for the nodes that have no NTP server.
[Unit]
Description=K-PaaS time server (SNTP) for the cluster's nodes
After=network-online.target
Wants=network-online.target

[Service]
ExecStart=%s timeserver --addr %s:123
Restart=always
RestartSec=5
DynamicUser=yes
AmbientCapabilities=CAP_NET_BIND_SERVICE
CapabilityBoundingSet=CAP_NET_BIND_SERVICE
NoNewPrivileges=yes

[Install]
WantedBy=multi-user.target
`
)

// servesTime reports whether this node serves time to the others: it is
// the first control plane and some other node names no NTP server.
func servesTime(e *Env) bool {
	if !e.IsFirstControlPlane() {
		return false
	}
	for _, n := range e.Cluster.Nodes {
		if n.Name != e.Node.Name && len(n.NTP) == 0 {
			return true
		}
	}
	return false
}

// managementFile and managementNetwork configure a management NIC: DHCP
// for its own address only, no route and no resolver from it.
const (
	managementFile    = "/etc/systemd/network/20-kpaas-management-%d.network"
	managementNetwork = `# Written by kpaas-agent: a management NIC (DHCP, no routes, no DNS).
[Match]
MACAddress=%s

[Network]
DHCP=ipv4
LinkLocalAddressing=no
IPv6AcceptRA=no

[DHCPv4]
UseRoutes=no
UseDNS=no
UseNTP=no
UseHostname=no
UseDomains=no
`
)

// ntpServers are the node's NTP servers; with none configured, every
// node but the first control plane asks the first control plane, which
// then serves its clock (kpaas-timeserver.service, SNTP), so the
// cluster's clocks agree even without a time source: TLS breaks on skew.
// The first control plane itself keeps its hardware clock, which
// preflight checks against the bundle's build time.
func ntpServers(e *Env) []string {
	if len(e.Node.NTP) > 0 {
		return e.Node.NTP
	}
	if e.IsFirstControlPlane() {
		return nil
	}
	if fcp := e.Cluster.FirstControlPlane(); fcp != nil {
		addr, _, _ := strings.Cut(fcp.Address, "/")
		return []string{addr}
	}
	return nil
}

// resolvConf names the site's DNS servers. On a closed network with none,
// it names the node's gateway or, without one, the first control plane:
// CoreDNS refuses to start without an upstream, and names outside the
// cluster do not resolve there anyway.
func resolvConf(e *Env) []byte {
	var b bytes.Buffer
	b.WriteString("# Written by kpaas-agent from the cluster configuration.\n")
	servers := e.Node.DNS
	if len(servers) == 0 {
		b.WriteString("# No DNS servers configured: an upstream for CoreDNS that answers nothing outside the cluster.\n")
		switch fcp := e.Cluster.FirstControlPlane(); {
		case e.Node.Gateway != "":
			servers = []string{e.Node.Gateway}
		case fcp != nil:
			addr, _, _ := strings.Cut(fcp.Address, "/")
			servers = []string{addr}
		}
	}
	for _, s := range servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	return b.Bytes()
}

func isIP(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}

func swapOn(e *Env) bool {
	b, err := e.Host.ReadFile("/proc/swaps")
	if err != nil {
		return false
	}
	return len(strings.Split(strings.TrimSpace(string(b)), "\n")) > 1
}

func moduleLoaded(e *Env, name string) bool {
	if e.Host.Exists("/sys/module/" + name) {
		return true
	}
	b, err := e.Host.ReadFile("/proc/modules")
	return err == nil && bytes.Contains(b, []byte(name+" "))
}

// addressUp reports whether the node's address is on its NIC.
func addressUp(ctx context.Context, e *Env) (bool, error) {
	out, err := e.Host.Run(ctx, "ip", "-o", "-4", "addr", "show", "dev", e.NIC)
	if err != nil {
		return false, nil // the NIC may not be up yet
	}
	return bytes.Contains(out, []byte(" "+e.Node.Address+" ")), nil
}

// nodeIP is the node's address without its prefix.
func nodeIP(n *cluster.Node) string {
	addr, _, _ := strings.Cut(n.Address, "/")
	return addr
}
