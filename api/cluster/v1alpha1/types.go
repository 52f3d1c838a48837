// Package v1alpha1 is the user-facing schema of a site's cluster
// configuration (kind: Cluster): which machines form the cluster, how they
// are addressed, and the cluster-wide network settings. `kpaas cluster
// init` writes one per site; kpaas-agent reads it from the node's config
// disk (or from the media's ESP) on every boot.
//
// The package holds types, defaults and validation only. Secrets (CA keys,
// the bootstrap token) never live in this document: they are separate
// files beside it (see Secret file names below).
package v1alpha1

// APIVersion and Kind identify a cluster configuration.
const (
	APIVersion = "kpaas.dev/v1alpha1"
	Kind       = "Cluster"
)

// Node roles.
const (
	RoleControlPlane = "control-plane"
	RoleWorker       = "worker"
)

// kube-proxy modes.
const (
	ProxyIPVS     = "ipvs"
	ProxyIPTables = "iptables"
)

// Platform storage backends.
const (
	StorageNFS  = "nfs"
	StorageRook = "rook"
)

// Defaults (the K-PaaS ones where K-PaaS has one).
const (
	DefaultPodCIDR       = "10.233.64.0/18"
	DefaultServiceCIDR   = "10.233.0.0/18"
	DefaultDNSDomain     = "cluster.local"
	DefaultProxyMode     = ProxyIPVS
	DefaultAPIServerPort = 6443
	DefaultSeedPort      = 5000
)

// Cluster is a site's cluster configuration.
type Cluster struct {
	APIVersion string   `yaml:"apiVersion" json:"apiVersion"`
	Kind       string   `yaml:"kind" json:"kind"`
	Metadata   Metadata `yaml:"metadata" json:"metadata"`

	// ControlPlaneEndpoint is where every node and the operator reach the
	// API server: a control plane's address (or a DNS name or virtual
	// address in front of several) and a port.
	ControlPlaneEndpoint Endpoint `yaml:"controlPlaneEndpoint" json:"controlPlaneEndpoint"`

	Networking Networking `yaml:"networking,omitempty" json:"networking"`

	// Seed is the node-local registry seed (always on 127.0.0.1).
	Seed Seed `yaml:"seed,omitempty" json:"seed"`

	Nodes []Node `yaml:"nodes" json:"nodes"`

	// Platform holds the options of the platform the first control plane
	// installs after the cluster forms. Reserved: its fields come with the
	// platform phase.
	Platform *Platform `yaml:"platform,omitempty" json:"platform,omitempty"`
}

// Metadata names the cluster.
type Metadata struct {
	// Name is the cluster's name: a DNS label (it names the kubeconfig
	// context and the kubeadm ClusterConfiguration).
	Name string `yaml:"name" json:"name"`
}

// Endpoint is a host and port.
type Endpoint struct {
	// Host is an IPv4 address or a DNS name.
	Host string `yaml:"host" json:"host"`
	// Port; default 6443.
	Port int `yaml:"port,omitempty" json:"port,omitempty"`
}

// Networking is the cluster-wide network settings.
type Networking struct {
	// PodCIDR is the pod network; default 10.233.64.0/18 (K-PaaS).
	PodCIDR string `yaml:"podCIDR,omitempty" json:"podCIDR,omitempty"`
	// ServiceCIDR is the service network; default 10.233.0.0/18 (K-PaaS).
	ServiceCIDR string `yaml:"serviceCIDR,omitempty" json:"serviceCIDR,omitempty"`
	// DNSDomain is the cluster's DNS domain; default cluster.local.
	DNSDomain string `yaml:"dnsDomain,omitempty" json:"dnsDomain,omitempty"`
	// ProxyMode is kube-proxy's mode: ipvs (default, as K-PaaS) or iptables.
	ProxyMode string `yaml:"proxyMode,omitempty" json:"proxyMode,omitempty"`
}

// Seed configures the node-local registry seed.
type Seed struct {
	// Port on 127.0.0.1; default 5000.
	Port int `yaml:"port,omitempty" json:"port,omitempty"`
}

// Node is one machine of the cluster.
type Node struct {
	// Name is the node's hostname and Kubernetes node name (a DNS label).
	Name string `yaml:"name" json:"name"`
	// Role is control-plane or worker.
	Role string `yaml:"role" json:"role"`
	// MACs are the hardware addresses of the node's NICs, by which a
	// booting node finds its entry ("52:54:00:12:34:56", lower case after
	// Default). The first is the NIC the address goes on.
	MACs []string `yaml:"macs,omitempty" json:"macs,omitempty"`
	// ManagementMACs are further NICs of the node on a management network
	// (a hypervisor's NAT, an out-of-band LAN): configured by DHCP, with
	// no default route and no DNS from it, so the cluster's traffic and
	// its absence of egress stay on the node's network. Optional.
	ManagementMACs []string `yaml:"managementMACs,omitempty" json:"managementMACs,omitempty"`
	// Address is the node's IPv4 address with its prefix, "10.0.0.11/24".
	Address string `yaml:"address" json:"address"`
	// Gateway is the default route's next hop (optional: a closed network
	// may have none).
	Gateway string `yaml:"gateway,omitempty" json:"gateway,omitempty"`
	// DNS servers (optional).
	DNS []string `yaml:"dns,omitempty" json:"dns,omitempty"`
	// NTP servers (optional; none: the node follows the first control
	// plane's clock).
	NTP []string `yaml:"ntp,omitempty" json:"ntp,omitempty"`
}

// Platform is reserved for the platform phase's options.
type Platform struct {
	// Storage is nfs or rook.
	Storage string `yaml:"storage,omitempty" json:"storage,omitempty"`
	// NFSServer is the NFS server's address when Storage is nfs.
	NFSServer string `yaml:"nfsServer,omitempty" json:"nfsServer,omitempty"`
	// Disable names releases of the bundle's platform this site does not
	// install. A release that depends on a disabled one must be disabled
	// too; the agent refuses the platform otherwise, and a name the
	// bundle does not have.
	Disable []string `yaml:"disable,omitempty" json:"disable,omitempty"`
}

// Secret file names, relative to SecretsDir. `kpaas cluster init` writes
// them (files 0600, folders 0700) into SecretsDir beside the cluster file;
// a node's config disk carries cluster.yaml and the subset of SecretsDir
// its role needs. The PKI names follow kubeadm's layout so the agent copies
// pki/ to /etc/kubernetes/pki unchanged.
const (
	SecretsDir = "secrets"
	// The cluster CA: every node gets the certificate, only control planes
	// the key.
	CACert = "pki/ca.crt"
	CAKey  = "pki/ca.key"
	// The front-proxy CA and the etcd CA: control planes only.
	FrontProxyCACert = "pki/front-proxy-ca.crt"
	FrontProxyCAKey  = "pki/front-proxy-ca.key"
	EtcdCACert       = "pki/etcd/ca.crt"
	EtcdCAKey        = "pki/etcd/ca.key"
	// The service-account signing key pair: control planes only.
	SAKey = "pki/sa.key"
	SAPub = "pki/sa.pub"
	// Token is the bootstrap token ("abcdef.0123456789abcdef") kubeadm join
	// uses; every node.
	Token = "token"
	// AdminKubeconfig is the operator's kubeconfig; never on a config disk.
	AdminKubeconfig = "admin.conf"
)

// ClusterFile is the name of the cluster configuration on a config disk
// and in the folder `kpaas cluster init` writes.
const ClusterFile = "cluster.yaml"
