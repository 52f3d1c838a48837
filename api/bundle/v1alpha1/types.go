// Package v1alpha1 is the user-facing schema of a bundle manifest: the YAML file
// that says what one kpaas bundle contains (kind: Bundle).
//
// The package holds types, defaults and validation only. It does no I/O beyond
// reading the manifest it is asked to parse, and never touches the network.
package v1alpha1

// APIVersion and Kind identify a bundle manifest.
const (
	APIVersion = "kpaas.dev/v1alpha1"
	Kind       = "Bundle"
)

// Bundle is a bundle manifest.
type Bundle struct {
	APIVersion string   `yaml:"apiVersion" json:"apiVersion"`
	Kind       string   `yaml:"kind" json:"kind"`
	Metadata   Metadata `yaml:"metadata" json:"metadata"`

	// Platforms are the OS/architecture pairs ("linux/amd64") whose images
	// the bundle carries. Multi-arch indexes are filtered down to them.
	// Default: [linux/amd64].
	Platforms []string `yaml:"platforms,omitempty" json:"platforms,omitempty"`

	// Kubernetes is the Kubernetes version the bundle installs; charts are
	// rendered against it.
	Kubernetes Kubernetes `yaml:"kubernetes" json:"kubernetes"`

	// OS is the bootable operating system image (optional: a bundle of
	// images and charts alone can be pushed or served without media).
	OS *OS `yaml:"os,omitempty" json:"os,omitempty"`

	Images  []Image   `yaml:"images,omitempty" json:"images,omitempty"`
	Charts  []Chart   `yaml:"charts,omitempty" json:"charts,omitempty"`
	Files   []File    `yaml:"files,omitempty" json:"files,omitempty"`
	Exclude []Exclude `yaml:"exclude,omitempty" json:"exclude,omitempty"`

	// Platform is what the first control plane installs from the bundle
	// once the cluster has formed (optional).
	Platform *Platform `yaml:"platform,omitempty" json:"platform,omitempty"`
}

// Metadata names a bundle.
type Metadata struct {
	Name        string `yaml:"name" json:"name"`
	Version     string `yaml:"version" json:"version"`
	Description string `yaml:"description,omitempty" json:"description,omitempty"`
}

// Kubernetes pins the Kubernetes version.
type Kubernetes struct {
	// Version is a semantic version with a leading v, e.g. v1.35.4.
	Version string `yaml:"version" json:"version"`
}

// OS refers to the operating system image, stored in the bundle as an OCI
// image whose layers are the root filesystem.
type OS struct {
	// Image is a full image reference, resolved like any other image.
	Image string `yaml:"image" json:"image"`
}

// Image is one container image. In YAML it may be written as a plain string
// (the reference) or as a mapping.
type Image struct {
	// Ref is the image reference as workloads name it: registry/repo:tag,
	// optionally @sha256:… to pin it. A missing registry means docker.io.
	Ref string `yaml:"ref" json:"ref"`
	// Platforms overrides the bundle's platforms for this image.
	Platforms []string `yaml:"platforms,omitempty" json:"platforms,omitempty"`
}

// Chart is one Helm chart and the release the platform installs from it.
type Chart struct {
	// Name is the chart's name (as in Chart.yaml).
	Name string `yaml:"name" json:"name"`
	// Source says where the chart comes from:
	//   - an http(s) Helm repository URL (the repository's index.yaml is read),
	//   - an oci:// reference of the chart without tag (oci://host/path/name),
	//   - a local folder or .tgz, relative to the manifest file.
	Source string `yaml:"source" json:"source"`
	// Version is the chart version. Required for repository and OCI sources;
	// for local charts it must match Chart.yaml when given.
	Version string `yaml:"version,omitempty" json:"version,omitempty"`
	// Release is the Helm release name (default: Name).
	Release string `yaml:"release,omitempty" json:"release,omitempty"`
	// Namespace is the release namespace (default: Release).
	Namespace string `yaml:"namespace,omitempty" json:"namespace,omitempty"`
	// Values are the release's values; ValuesFiles (relative to the manifest)
	// are merged first, in order, then Values on top.
	Values      map[string]any `yaml:"values,omitempty" json:"values,omitempty"`
	ValuesFiles []string       `yaml:"valuesFiles,omitempty" json:"valuesFiles,omitempty"`
}

// File is one host file: a binary, an archive, a script.
type File struct {
	// Name identifies the file inside the bundle (e.g. kubeadm).
	Name string `yaml:"name" json:"name"`
	// Version is recorded with the file and used as its tag (default: the
	// first 12 hex digits of SHA256).
	Version string `yaml:"version,omitempty" json:"version,omitempty"`
	// Source is an http(s) URL or a local path relative to the manifest.
	Source string `yaml:"source" json:"source"`
	// SHA256 is the expected hex digest of the file's bytes. Required.
	SHA256 string `yaml:"sha256" json:"sha256"`
	// Mode is the octal file mode on the node, e.g. "0755" (default "0644").
	Mode string `yaml:"mode,omitempty" json:"mode,omitempty"`
	// Target is where the agent installs the file on a node (optional).
	Target string `yaml:"target,omitempty" json:"target,omitempty"`
}

// Exclude names images that charts reference but the bundle deliberately
// leaves out. Image is a reference or a path.Match pattern over references.
type Exclude struct {
	Image  string `yaml:"image" json:"image"`
	Reason string `yaml:"reason" json:"reason"`
}
