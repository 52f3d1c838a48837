// Package v1alpha1 is the user-facing schema of an OS image definition: the
// YAML file that says how the node operating system is assembled from
// Debian-family packages (kind: OSImage). See images/ for the definitions.
//
// The package holds types, defaults and validation only; it does no I/O
// beyond reading the definition it is asked to parse.
package v1alpha1

// APIVersion and Kind identify an OS image definition.
const (
	APIVersion = "kpaas.dev/v1alpha1"
	Kind       = "OSImage"
)

// RefPrefix is the registry and repository prefix of built OS images:
// an image named debian-12, version 12.11.0 is kpaas.local/os/debian-12:12.11.0.
const RefPrefix = "kpaas.local/os/"

// OSImage is an OS image definition.
type OSImage struct {
	APIVersion string   `yaml:"apiVersion" json:"apiVersion"`
	Kind       string   `yaml:"kind" json:"kind"`
	Metadata   Metadata `yaml:"metadata" json:"metadata"`

	// Distribution is debian or ubuntu.
	Distribution string `yaml:"distribution" json:"distribution"`
	// Suite is the release code name: bookworm, jammy.
	Suite string `yaml:"suite" json:"suite"`
	// Mirror is the package archive the root is built from
	// (http://deb.debian.org/debian, or a snapshot.debian.org URL to pin
	// package versions).
	Mirror string `yaml:"mirror" json:"mirror"`
	// Components are the archive components to use. Default: [main].
	Components []string `yaml:"components,omitempty" json:"components,omitempty"`
	// Sources are further apt source lines ("deb URL SUITE COMPONENT…"),
	// e.g. the security archive.
	Sources []string `yaml:"sources,omitempty" json:"sources,omitempty"`
	// Architecture is the Debian architecture. Default and only value
	// supported today: amd64.
	Architecture string `yaml:"architecture,omitempty" json:"architecture,omitempty"`
	// Kernel is the kernel package (linux-image-amd64,
	// linux-image-generic). Its modules feed the initramfs.
	Kernel string `yaml:"kernel" json:"kernel"`
	// Packages are installed on top of the minimal base (minbase variant).
	Packages []string `yaml:"packages" json:"packages"`
}

// Metadata names an OS image.
type Metadata struct {
	// Name is an OCI repository name component: debian-12, ubuntu-22.04.
	Name string `yaml:"name" json:"name"`
	// Version is the image's own version, used as its tag.
	Version     string `yaml:"version" json:"version"`
	Description string `yaml:"description,omitempty" json:"description,omitempty"`
}

// Ref is the reference the built image is stored under:
// kpaas.local/os/<name>:<version>. A bundle's os.image names it.
func (o *OSImage) Ref() string { return RefPrefix + o.Metadata.Name + ":" + o.Metadata.Version }

// DefaultArchitecture and DefaultComponent fill empty fields.
const (
	DefaultArchitecture = "amd64"
	DefaultComponent    = "main"
)

// Default fills in the fields a definition may leave out. It changes only
// empty fields, so calling it twice is harmless.
func (o *OSImage) Default() {
	if o.Architecture == "" {
		o.Architecture = DefaultArchitecture
	}
	if len(o.Components) == 0 {
		o.Components = []string{DefaultComponent}
	}
}
