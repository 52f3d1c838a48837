package v1alpha1

import "strings"

// Default fills in the fields a configuration may leave out (the
// endpoint's port, the networks, the DNS domain, kube-proxy's mode, the
// seed's port) and spells every MAC address in lower case. It changes only
// empty fields, so calling it twice is harmless. Parse calls it before
// Validate.
func (c *Cluster) Default() {
	if c.ControlPlaneEndpoint.Port == 0 {
		c.ControlPlaneEndpoint.Port = DefaultAPIServerPort
	}
	w := &c.Networking
	if w.PodCIDR == "" {
		w.PodCIDR = DefaultPodCIDR
	}
	if w.ServiceCIDR == "" {
		w.ServiceCIDR = DefaultServiceCIDR
	}
	if w.DNSDomain == "" {
		w.DNSDomain = DefaultDNSDomain
	}
	if w.ProxyMode == "" {
		w.ProxyMode = DefaultProxyMode
	}
	if c.Seed.Port == 0 {
		c.Seed.Port = DefaultSeedPort
	}
	for i := range c.Nodes {
		for j, m := range c.Nodes[i].MACs {
			c.Nodes[i].MACs[j] = strings.ToLower(m)
		}
		for j, m := range c.Nodes[i].ManagementMACs {
			c.Nodes[i].ManagementMACs[j] = strings.ToLower(m)
		}
	}
}
