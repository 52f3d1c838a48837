package kpaas

import (
	"fmt"
	"os"
	"strings"

	"kpaas.dev/appliance/internal/progress"
)

// File is one written medium.
type File struct {
	Format string // raw, qcow2, iso
	Path   string
	Size   int64
	SHA256 string // hex
}

// Artifact is the media of one build. State("sha256") is a map from each
// file's path to its sha256; State("generated_data") carries the bundle's
// name and version and the OS image for later post-processors.
type Artifact struct {
	Dir                       string
	Media                     []File
	BundleName, BundleVersion string
	OS, OSDigest              string
}

// BuilderId is BuilderID.
func (a *Artifact) BuilderId() string { return BuilderID }

// Files are the media's paths.
func (a *Artifact) Files() []string {
	var out []string
	for _, f := range a.Media {
		out = append(out, f.Path)
	}
	return out
}

// Id is the bundle's name and version.
func (a *Artifact) Id() string { return a.BundleName + "-" + a.BundleVersion }

func (a *Artifact) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "K-PaaS media of bundle %s %s (%s):", a.BundleName, a.BundleVersion, a.OS)
	for _, f := range a.Media {
		fmt.Fprintf(&b, "\n%s (%s, %s) sha256:%s", f.Path, f.Format, progress.Bytes(f.Size), f.SHA256)
	}
	return b.String()
}

// State answers "sha256" (map[string]string, path → hex) and
// "generated_data".
func (a *Artifact) State(name string) interface{} {
	switch name {
	case "sha256":
		m := map[string]string{}
		for _, f := range a.Media {
			m[f.Path] = f.SHA256
		}
		return m
	case "generated_data":
		return map[string]interface{}{"BundleName": a.BundleName, "BundleVersion": a.BundleVersion, "OSImage": a.OS, "OSDigest": a.OSDigest}
	}
	return nil
}

// Destroy removes the media and their SHA256SUMS.
func (a *Artifact) Destroy() error {
	var errs []string
	for _, f := range append(a.Files(), a.Dir+"/"+SumsFile) {
		if err := os.Remove(f); err != nil && !os.IsNotExist(err) {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("destroying the media: %s", strings.Join(errs, "; "))
	}
	return nil
}
