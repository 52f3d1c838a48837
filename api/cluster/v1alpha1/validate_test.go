package v1alpha1

import (
	"errors"
	"strings"
	"testing"
)

// base is a valid configuration; each case of TestParseRules edits it.
const base = `apiVersion: kpaas.dev/v1alpha1
kind: Cluster
metadata:
  name: site
controlPlaneEndpoint:
  host: 10.0.0.11
nodes:
  - name: cp1
    role: control-plane
    macs: ["52:54:00:00:00:01"]
    address: 10.0.0.11/24
    gateway: 10.0.0.1
    dns: [10.0.0.1]
    ntp: [ntp.example.org]
  - name: w1
    role: worker
    macs: ["52:54:00:00:00:02"]
    address: 10.0.0.21/24
`

// TestParseRules checks every rule through Parse, so that each problem
// carries the position of the field it is about.
func TestParseRules(t *testing.T) {
	tests := []struct {
		name     string
		old, new string // replace the first old in base by new
		want     string // the error, one problem a line; "" for none
	}{
		{"valid", "", "", ""},
		{"apiVersion", "kpaas.dev/v1alpha1", "v1", `c.yaml:1:13: apiVersion: must be "kpaas.dev/v1alpha1", not "v1"`},
		{"kind", "kind: Cluster", "kind: Bundle", `c.yaml:2:7: kind: must be "Cluster", not "Bundle"`},
		{"kind missing", "kind: Cluster\n", "", `c.yaml:1:1: kind: required`},
		{"name missing", "  name: site\n", "", `c.yaml:3:10: metadata.name: required`},
		{"name label", "name: site", "name: Site_1", `c.yaml:4:9: metadata.name: "Site_1" is not a DNS-1123 label (lower case letters, digits and '-', starting and ending with a letter or digit)`},
		{"unknown field", "  name: site\n", "  name: site\n  labels: {}\n", `c.yaml:5:3: metadata.labels: unknown field`},
		{"wrong type", "  name: site\n", "  name: [site]\n", `c.yaml:4:9: metadata.name: expected a string, got a list`},
		{"duplicate key", "kind: Cluster\n", "kind: Cluster\nkind: Cluster\n", `c.yaml:3:1: kind: duplicate key (first at 2:1)`},
		{"endpoint missing", "  host: 10.0.0.11\n", "", `c.yaml:5:22: controlPlaneEndpoint.host: required`},
		{"endpoint host", "host: 10.0.0.11", "host: 10.0.0.300", `c.yaml:6:9: controlPlaneEndpoint.host: "10.0.0.300" is not an IPv4 address or a DNS name`},
		{"endpoint dns name", "host: 10.0.0.11", "host: api.site.example", ""},
		{"endpoint not a control plane", "host: 10.0.0.11", "host: 10.0.0.21", `c.yaml:6:9: controlPlaneEndpoint.host: 10.0.0.21 is not the address of a control-plane node (name a load balancer or virtual address by DNS name)`},
		{"endpoint port", "host: 10.0.0.11\n", "host: 10.0.0.11\n  port: 70000\n", `c.yaml:7:9: controlPlaneEndpoint.port: port 70000 is not in 1-65535`},
		{"endpoint port type", "host: 10.0.0.11\n", "host: 10.0.0.11\n  port: \"6443\"\n", `c.yaml:7:9: controlPlaneEndpoint.port: expected an integer, got a string`},
		{"endpoint port huge", "host: 10.0.0.11\n", "host: 10.0.0.11\n  port: 99999999999999999999\n", `c.yaml:7:9: controlPlaneEndpoint.port: 99999999999999999999 is out of range`},
		{"pod cidr", "nodes:\n", "networking: {podCIDR: 10.233.64.0/33}\nnodes:\n", `c.yaml:7:23: networking.podCIDR: "10.233.64.0/33" is not an IPv4 CIDR like 10.233.64.0/18`},
		{"pod cidr host bits", "nodes:\n", "networking: {podCIDR: 10.233.64.1/18}\nnodes:\n", `c.yaml:7:23: networking.podCIDR: "10.233.64.1/18" has host bits set (the network is 10.233.64.0/18)`},
		{"service overlaps pod", "nodes:\n", "networking: {serviceCIDR: 10.233.0.0/16}\nnodes:\n", `c.yaml:7:27: networking.serviceCIDR: 10.233.0.0/16 overlaps networking.podCIDR 10.233.64.0/18`},
		{"node network overlaps pod", "nodes:\n", "networking: {podCIDR: 10.0.0.0/16}\nnodes:\n",
			"c.yaml:12:14: nodes[0].address: node network 10.0.0.0/24 overlaps networking.podCIDR 10.0.0.0/16\n" +
				"c.yaml:19:14: nodes[1].address: node network 10.0.0.0/24 overlaps networking.podCIDR 10.0.0.0/16"},
		{"node network overlaps service", "address: 10.0.0.21/24", "address: 10.233.1.5/24", "c.yaml:18:14: nodes[1].address: node network 10.233.1.0/24 overlaps networking.serviceCIDR 10.233.0.0/18"},
		{"dns domain", "nodes:\n", "networking: {dnsDomain: -x}\nnodes:\n", `c.yaml:7:25: networking.dnsDomain: "-x" is not a DNS name`},
		{"proxy mode", "nodes:\n", "networking: {proxyMode: nftables}\nnodes:\n", `c.yaml:7:25: networking.proxyMode: must be "ipvs" or "iptables", not "nftables"`},
		{"proxy mode iptables", "nodes:\n", "networking: {proxyMode: iptables}\nnodes:\n", ""},
		{"seed port", "nodes:\n", "seed: {port: 0x10000}\nnodes:\n", `c.yaml:7:14: seed.port: port 65536 is not in 1-65535`},
		{"seed port negative", "nodes:\n", "seed: {port: -1}\nnodes:\n", `c.yaml:7:14: seed.port: port -1 is not in 1-65535`},
		{"no nodes", "nodes:\n", "nodes: []\nx:\n", "c.yaml:7:8: nodes: required: at least one control-plane node\nc.yaml:8:1: x: unknown field"},
		{"no control plane", "role: control-plane", "role: worker",
			"c.yaml:6:9: controlPlaneEndpoint.host: 10.0.0.11 is not the address of a control-plane node (name a load balancer or virtual address by DNS name)\n" +
				`c.yaml:8:3: nodes: no node has role "control-plane": one must run kubeadm init`},
		{"role", "role: worker", "role: master", `c.yaml:16:11: nodes[1].role: must be "control-plane" or "worker", not "master"`},
		{"node name", "name: w1", "name: W1", `c.yaml:15:11: nodes[1].name: "W1" is not a DNS-1123 label (lower case letters, digits and '-', starting and ending with a letter or digit)`},
		{"node name duplicate", "name: w1", "name: cp1", `c.yaml:15:11: nodes[1].name: duplicate node name "cp1" (same as nodes[0])`},
		{"mac", `"52:54:00:00:00:02"`, `"52:54:00:00:02"`, `c.yaml:17:12: nodes[1].macs[0]: "52:54:00:00:02" is not a MAC address like 52:54:00:12:34:56`},
		{"mac duplicate in other case", `"52:54:00:00:00:02"`, `"52:54:00:00:00:0A", "52:54:00:00:00:01"`, `c.yaml:17:33: nodes[1].macs[1]: duplicate MAC 52:54:00:00:00:01 (same as nodes[0].macs[0])`},
		{"mac duplicate upper", `"52:54:00:00:00:02"`, `"52:54:00:0A:00:01", "52:54:00:0a:00:01"`, `c.yaml:17:33: nodes[1].macs[1]: duplicate MAC 52:54:00:0a:00:01 (same as nodes[1].macs[0])`},
		{"management mac duplicate", `macs: ["52:54:00:00:00:02"]`, "macs: [\"52:54:00:00:00:02\"]\n    managementMACs: [\"52:54:00:00:00:01\"]", `c.yaml:18:22: nodes[1].managementMACs[0]: duplicate MAC 52:54:00:00:00:01 (same as nodes[0].macs[0])`},
		{"management mac", `macs: ["52:54:00:00:00:02"]`, "macs: [\"52:54:00:00:00:02\"]\n    managementMACs: [\"52:54:00:00:00:03\"]", ""},
		{"address missing", "    address: 10.0.0.21/24\n", "", `c.yaml:15:5: nodes[1].address: required`},
		{"address no prefix", "address: 10.0.0.21/24", "address: 10.0.0.21", `c.yaml:18:14: nodes[1].address: "10.0.0.21" is not an IPv4 address with a prefix like 10.0.0.11/24`},
		{"address ipv6", "address: 10.0.0.21/24", "address: fd00::1/64", `c.yaml:18:14: nodes[1].address: "fd00::1/64" is not an IPv4 address with a prefix like 10.0.0.11/24`},
		{"address duplicate", "address: 10.0.0.21/24", "address: 10.0.0.11/16", `c.yaml:18:14: nodes[1].address: duplicate address 10.0.0.11 (same as nodes[0])`},
		{"address network", "address: 10.0.0.21/24", "address: 10.0.0.0/24", `c.yaml:18:14: nodes[1].address: 10.0.0.0/24 is the network's own or broadcast address`},
		{"address broadcast", "address: 10.0.0.21/24", "address: 10.0.0.255/24", `c.yaml:18:14: nodes[1].address: 10.0.0.255/24 is the network's own or broadcast address`},
		{"gateway outside", "gateway: 10.0.0.1", "gateway: 10.0.1.1", `c.yaml:12:14: nodes[0].gateway: 10.0.1.1 is outside the node's network 10.0.0.0/24`},
		{"gateway own", "gateway: 10.0.0.1", "gateway: 10.0.0.11", `c.yaml:12:14: nodes[0].gateway: 10.0.0.11 is the node's own address`},
		{"gateway not ip", "gateway: 10.0.0.1", "gateway: router", `c.yaml:12:14: nodes[0].gateway: "router" is not an IPv4 address`},
		{"dns", "dns: [10.0.0.1]", "dns: [10.0.0.1, dns.example.org]", `c.yaml:13:21: nodes[0].dns[1]: "dns.example.org" is not an IPv4 address`},
		{"ntp", "ntp: [ntp.example.org]", "ntp: [10.0.0.1, ntp_1]", `c.yaml:14:21: nodes[0].ntp[1]: "ntp_1" is not an IPv4 address or a DNS name`},
		{"platform storage", "nodes:\n", "platform: {storage: ceph}\nnodes:\n", `c.yaml:7:21: platform.storage: must be "nfs" or "rook", not "ceph"`},
		{"platform nfs server", "nodes:\n", "platform: {storage: nfs}\nnodes:\n", `c.yaml:7:12: platform.nfsServer: required`},
		{"platform nfs", "nodes:\n", "platform: {storage: nfs, nfsServer: 10.0.0.5}\nnodes:\n", ""},
		{"platform disable twice", "nodes:\n", "platform: {disable: [harbor, harbor]}\nnodes:\n", `c.yaml:7:30: platform.disable[1]: names "harbor" twice`},
		{"platform disable", "nodes:\n", "platform: {disable: [harbor]}\nnodes:\n", ""},
		{"platform rook nfs server", "nodes:\n", "platform: {storage: rook, nfsServer: 10.0.0.5}\nnodes:\n", `c.yaml:7:38: platform.nfsServer: set only with storage "nfs"`},
		{"many at once", "kind: Cluster", "kind: Bundle\nextra: 1",
			"c.yaml:2:7: kind: must be \"Cluster\", not \"Bundle\"\nc.yaml:3:1: extra: unknown field"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := base
			if tt.old != "" {
				if !strings.Contains(doc, tt.old) {
					t.Fatalf("base has no %q", tt.old)
				}
				doc = strings.Replace(doc, tt.old, tt.new, 1)
			}
			c, err := Parse("c.yaml", []byte(doc))
			got := ""
			if err != nil {
				var verr *ValidationError
				if !errors.As(err, &verr) {
					t.Fatalf("got %T, want *ValidationError: %v", err, err)
				}
				got = err.Error()
			} else if c == nil {
				t.Fatal("nil cluster without error")
			}
			if got != tt.want {
				t.Errorf("got\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestDefault(t *testing.T) {
	c, err := Parse("c.yaml", []byte(strings.Replace(base, `"52:54:00:00:00:01"`, `"52:54:00:AB:CD:01"`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	if c.ControlPlaneEndpoint.Port != 6443 || c.Seed.Port != 5000 ||
		c.Networking != (Networking{PodCIDR: "10.233.64.0/18", ServiceCIDR: "10.233.0.0/18", DNSDomain: "cluster.local", ProxyMode: "ipvs"}) {
		t.Errorf("defaults: %+v", c)
	}
	if got := c.Nodes[0].MACs[0]; got != "52:54:00:ab:cd:01" {
		t.Errorf("MAC %q, want lower case", got)
	}
	if got := c.ControlPlaneEndpoint.String(); got != "10.0.0.11:6443" {
		t.Errorf("endpoint %q", got)
	}
}

// TestValidateWithoutPositions checks Validate on a Cluster built in Go.
func TestValidateWithoutPositions(t *testing.T) {
	c := &Cluster{APIVersion: APIVersion, Kind: Kind, Metadata: Metadata{Name: "x"},
		ControlPlaneEndpoint: Endpoint{Host: "api.x"},
		Nodes:                []Node{{Name: "a", Role: RoleWorker, Address: "10.1.0.2/24"}}}
	c.Default()
	err := c.Validate()
	if want := `nodes: no node has role "control-plane": one must run kubeadm init`; err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
	c.Nodes[0].Role = RoleControlPlane
	if err := c.Validate(); err != nil {
		t.Error(err)
	}
}
