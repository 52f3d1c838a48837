package bundle

import (
	"encoding/json"
	"fmt"
	"sort"

	bundlev1 "kpaas.dev/appliance/api/bundle/v1alpha1"
)

// Lock is kpaas-lock.json: every artifact of the bundle resolved to a
// digest, with its size and where it came from. The agent reads it to know
// what to install (charts' releases, namespaces and values; files' targets)
// and the signature covers it.
type Lock struct {
	APIVersion string `json:"apiVersion"` // kpaas.dev/v1alpha1
	Kind       string `json:"kind"`       // BundleLock
	Name       string `json:"name"`
	Version    string `json:"version"`
	// ManifestDigest is the sha256 of the bundle manifest file that was baked.
	ManifestDigest    string         `json:"manifestDigest"`
	KubernetesVersion string         `json:"kubernetesVersion"`
	Platforms         []string       `json:"platforms"`
	Artifacts         []LockArtifact `json:"artifacts"`
	// Platform is what the first control plane installs (absent when the
	// manifest has no platform section).
	Platform *LockPlatform `json:"platform,omitempty"`
}

// LockPlatform is the manifest's platform section as the agent installs
// it: every source resolved to an artifact of the bundle.
type LockPlatform struct {
	// Facts are the bundle's declared facts with their defaults.
	Facts    map[string]string `json:"facts,omitempty"`
	Secrets  []LockSecret      `json:"secrets,omitempty"`
	Releases []LockRelease     `json:"releases"`
}

// LockSecret is a per-cluster generated secret the agent creates as a
// Kubernetes Secret.
type LockSecret struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	// Type is password or tls (bundlev1.SecretPassword, SecretTLS); an
	// older lock without it means password.
	Type        string `json:"type,omitempty"`
	Key         string `json:"key,omitempty"`
	Htpasswd    string `json:"htpasswd,omitempty"`
	Description string `json:"description,omitempty"`
}

// Parts lists the secret's values (bundlev1.SecretParts).
func (s LockSecret) Parts() []bundlev1.SecretPart {
	return bundlev1.SecretParts(s.Name, s.Type, s.Key, s.Htpasswd)
}

// LockRelease is one release of the platform.
type LockRelease struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	// Chart is the reference of the chart artifact (its lock entry holds
	// the chart's own values); Manifests the reference of the file
	// artifact holding the release's manifests (vendored files or a
	// kustomization rendered at bake time) as one YAML stream.
	Chart     string `json:"chart,omitempty"`
	Manifests string `json:"manifests,omitempty"`
	// Values are merged over the chart's values; they may name
	// ${fact:NAME} and ${secret:NAME}, expanded on the node.
	Values     map[string]any    `json:"values,omitempty"`
	Substitute map[string]string `json:"substitute,omitempty"`
	DependsOn  []string          `json:"dependsOn,omitempty"`
	Gate       LockGate          `json:"gate"`
	Timeout    string            `json:"timeout"`
	URL        string            `json:"url,omitempty"`
	Vault      bool              `json:"vault,omitempty"`
	Harbor     bool              `json:"harbor,omitempty"`
	// Images are the references the release's objects name.
	Images []string `json:"images,omitempty"`
}

// LockGate is when a release counts as healthy (see the manifest's gate).
type LockGate struct {
	Skip       bool                `json:"skip,omitempty"`
	Conditions []LockGateCondition `json:"conditions,omitempty"`
}

// LockGateCondition is one extra check of a gate.
type LockGateCondition struct {
	Object    string `json:"object,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	JSONPath  string `json:"jsonPath,omitempty"`
	Equals    string `json:"equals,omitempty"`
	Service   string `json:"service,omitempty"`
}

// LockArtifact is one resolved artifact.
type LockArtifact struct {
	Kind Kind `json:"kind"`
	// Ref is the full reference recorded in index.json.
	Ref       string `json:"ref"`
	Digest    string `json:"digest"`
	MediaType string `json:"mediaType"`
	// Size is the sum of the sizes of every distinct blob of the artifact
	// (manifests, configs, layers).
	Size int64 `json:"size"`
	// Source says where the artifact was resolved from, e.g.
	// "registry:docker.io/library/nginx:1.25", "mirror:oci/…", "file:…".
	Source string `json:"source"`
	// SourceDigest is the upstream digest when it differs from Digest
	// (an index filtered to the bundle's platforms).
	SourceDigest string `json:"sourceDigest,omitempty"`
	// SourceRepository and SourceRevision are the repository and commit
	// an image was built from, when its config says so (the labels
	// org.opencontainers.image.source and .revision); the SBOM records them.
	SourceRepository string   `json:"sourceRepository,omitempty"`
	SourceRevision   string   `json:"sourceRevision,omitempty"`
	Platforms        []string `json:"platforms,omitempty"`

	// Charts only.
	Chart *LockChart `json:"chart,omitempty"`
	// Files only.
	File *LockedFile `json:"file,omitempty"`
}

// LockChart is what the agent needs to install a chart's release.
type LockChart struct {
	Name      string         `json:"name"`
	Version   string         `json:"version"`
	Release   string         `json:"release"`
	Namespace string         `json:"namespace"`
	Order     int            `json:"order"` // position in the manifest: install order
	Values    map[string]any `json:"values,omitempty"`
	// Images are the references the rendered chart uses (normalised).
	Images []string `json:"images,omitempty"`
}

// LockedFile describes a host file.
type LockedFile struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
	Mode   string `json:"mode"`
	Target string `json:"target,omitempty"`
}

// LockKind is the kind of a lock document.
const LockKind = "BundleLock"

// Marshal encodes the lock deterministically: artifacts sorted by kind and
// reference, indented, with a trailing newline.
func (l *Lock) Marshal() ([]byte, error) {
	c := *l
	c.Artifacts = append([]LockArtifact(nil), l.Artifacts...)
	sort.SliceStable(c.Artifacts, func(i, j int) bool {
		a, b := c.Artifacts[i], c.Artifacts[j]
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		return a.Ref < b.Ref
	})
	b, err := json.MarshalIndent(&c, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// ReadLock reads the bundle's lock.
func (s *Store) ReadLock() (*Lock, error) {
	b, err := s.ReadFile(LockFile)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", LockFile, err)
	}
	var l Lock
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, fmt.Errorf("parsing %s: %w", s.Path(LockFile), err)
	}
	if l.Kind != LockKind {
		return nil, fmt.Errorf("parsing %s: kind %q, want %q", s.Path(LockFile), l.Kind, LockKind)
	}
	return &l, nil
}
