package cli

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	"kpaas.dev/appliance/api/cluster/v1alpha1"
)

// renderCluster writes a cluster configuration as `kpaas cluster init`
// leaves it for people to edit: the fields in schema order, lists of
// scalars in flow style, and every string that a YAML 1.1 reader could
// take for something else quoted (MACs above all: 52:54:00:00:00:01 is a
// base-60 integer to PyYAML and Ansible).
func renderCluster(c *v1alpha1.Cluster) []byte {
	var b strings.Builder
	line := func(indent int, key string, v any) {
		fmt.Fprintf(&b, "%s%s: %v\n", strings.Repeat("  ", indent), key, v)
	}
	list := func(indent int, key string, vs []string) {
		if len(vs) == 0 {
			return
		}
		q := make([]string, len(vs))
		for i, v := range vs {
			q[i] = yamlString(v)
		}
		line(indent, key, "["+strings.Join(q, ", ")+"]")
	}
	b.WriteString("# A K-PaaS cluster configuration (docs/cluster.md). Check it with\n# kpaas cluster lint; the secrets are in secrets/ beside it.\n")
	line(0, "apiVersion", yamlString(c.APIVersion))
	line(0, "kind", yamlString(c.Kind))
	b.WriteString("metadata:\n")
	line(1, "name", yamlString(c.Metadata.Name))
	b.WriteString("controlPlaneEndpoint:\n")
	line(1, "host", yamlString(c.ControlPlaneEndpoint.Host))
	line(1, "port", c.ControlPlaneEndpoint.Port)
	b.WriteString("networking:\n")
	line(1, "podCIDR", yamlString(c.Networking.PodCIDR))
	line(1, "serviceCIDR", yamlString(c.Networking.ServiceCIDR))
	line(1, "dnsDomain", yamlString(c.Networking.DNSDomain))
	line(1, "proxyMode", yamlString(c.Networking.ProxyMode))
	b.WriteString("seed:\n")
	line(1, "port", c.Seed.Port)
	b.WriteString("nodes:\n")
	for _, n := range c.Nodes {
		line(1, "- name", yamlString(n.Name))
		line(2, "role", yamlString(n.Role))
		list(2, "macs", n.MACs)
		line(2, "address", yamlString(n.Address))
		if n.Gateway != "" {
			line(2, "gateway", yamlString(n.Gateway))
		}
		list(2, "dns", n.DNS)
		list(2, "ntp", n.NTP)
	}
	if p := c.Platform; p != nil {
		b.WriteString("platform:\n")
		if p.Storage != "" {
			line(1, "storage", yamlString(p.Storage))
		}
		if p.NFSServer != "" {
			line(1, "nfsServer", yamlString(p.NFSServer))
		}
	}
	return []byte(b.String())
}

var plainName = regexp.MustCompile(`^[a-z][a-z0-9.-]*$`)

// yamlString writes s plain when every YAML reader takes it for that
// string (a lower-case name that is not a YAML 1.1 keyword, an IPv4
// address or prefix, the API version), else double-quoted.
func yamlString(s string) string {
	switch strings.ToLower(s) {
	case "y", "n", "yes", "no", "on", "off", "true", "false", "null":
		return strconv.Quote(s)
	}
	if plainName.MatchString(s) || s == v1alpha1.APIVersion || s == v1alpha1.Kind {
		return s
	}
	if a, err := netip.ParseAddr(s); err == nil && a.Is4() {
		return s
	}
	if p, err := netip.ParsePrefix(s); err == nil && p.Addr().Is4() {
		return s
	}
	return strconv.Quote(s)
}
