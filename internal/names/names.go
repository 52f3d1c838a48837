// Package names is the one home of the names kpaas media, kpaas-init and
// kpaas-agent share: partition and file system labels, paths on the ESP
// and the ISO, and where things live on a booted node. The builder writes
// them, the node reads them; both import them from here.
package names

// Partitions (GPT names) and file system labels.
const (
	PartESP    = "EFI" // the EFI system partition (its FAT label too)
	PartRootA  = "KPAAS-ROOT-A"
	PartRootB  = "KPAAS-ROOT-B"
	PartBundle = "KPAAS-BUNDLE"
	PartState  = "KPAAS-STATE"
	// PartConfig labels a node's config disk (a partition name or a file
	// system label).
	PartConfig = "KPAAS-CONFIG"
	// ISOLabel is the ISO 9660 volume identifier.
	ISOLabel = "KPAAS"
)

// Files on the ESP (and in the ISO's EFI image).
const (
	KernelPath = "/kpaas/vmlinuz"
	InitrdPath = "/kpaas/initrd.img"
	// ESPConfig is the cluster configuration `kpaas image build --config`
	// puts on the media.
	ESPConfig = "kpaas/cluster.yaml"
	// ESPPublicKey is the bundle signing key `kpaas image build --key`
	// puts on the media; the agent checks the bundle's signature with it.
	ESPPublicKey = "kpaas/bundle.pub"
)

// Files on the ISO.
const (
	ISORoot   = "kpaas/root.squashfs"
	ISOBundle = "kpaas/bundle.squashfs"
	ISOESP    = "boot/efiboot.img"
)

// Paths on a booted node.
const (
	RunDir    = "/run/kpaas"
	BundleDir = "/run/kpaas/bundle" // the bundle, read-only
	ConfigDir = "/run/kpaas/config" // the config disk, or the ESP's cluster.yaml
	ESPDir    = "/run/kpaas/esp"    // the media's ESP, read-only
	// StateDir is the agent's folder on the state partition.
	StateDir = "/var/lib/kpaas"
)
