//go:generate go tool packer-sdc mapstructure-to-hcl2 -type Config,Output

// Package bundle is the Packer data source `kpaas-bundle`: it reads a
// bundle's lock (from a bundle folder, or from the head of an export
// without importing it) so a template can name its outputs after the
// bundle, its version and its OS image.
package bundle

import (
	"errors"
	"fmt"

	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/hashicorp/packer-plugin-sdk/hcl2helper"
	"github.com/hashicorp/packer-plugin-sdk/packer"
	"github.com/hashicorp/packer-plugin-sdk/template/config"
	"github.com/zclconf/go-cty/cty"

	kbundle "kpaas.dev/appliance/internal/bundle"
	"kpaas.dev/appliance/packer/internal/source"
)

// Config is the data source's configuration.
type Config struct {
	// The bundle: a folder made by `kpaas bake`, or an export made by
	// `kpaas bundle export` (a tar, the first part `.000` of a split
	// export, or its `.sha256sums` list). Only the lock is read. Required.
	Bundle string `mapstructure:"bundle" required:"true"`
}

// Output is what the data source gives a template.
type Output struct {
	// The bundle's name (metadata.name of its manifest).
	Name string `mapstructure:"name"`
	// The bundle's version (metadata.version).
	Version string `mapstructure:"version"`
	// The Kubernetes version the bundle carries.
	KubernetesVersion string `mapstructure:"kubernetes_version"`
	// The OS image's reference, e.g. `kpaas.local/os/debian-12:12.0.1`;
	// empty when the bundle has none.
	OSImage string `mapstructure:"os_image"`
	// The OS image's manifest digest.
	OSDigest string `mapstructure:"os_digest"`
	// How many artifacts the lock lists (what the node's agent reports:
	// `bundle NAME VERSION (N artifacts) ready`).
	ArtifactCount int `mapstructure:"artifact_count"`
	// The platforms, e.g. `["linux/amd64"]`.
	Platforms []string `mapstructure:"platforms"`
	// The sha256 of the manifest that was baked.
	ManifestDigest string `mapstructure:"manifest_digest"`
}

// Datasource is `kpaas-bundle`.
type Datasource struct {
	config Config
}

// ConfigSpec is the HCL2 schema of Config.
func (d *Datasource) ConfigSpec() hcldec.ObjectSpec { return d.config.FlatMapstructure().HCL2Spec() }

// OutputSpec is the HCL2 schema of Output.
func (d *Datasource) OutputSpec() hcldec.ObjectSpec {
	return (&Output{}).FlatMapstructure().HCL2Spec()
}

// Configure decodes and checks the configuration.
func (d *Datasource) Configure(raws ...interface{}) error {
	if err := config.Decode(&d.config, nil, raws...); err != nil {
		return err
	}
	var errs []error
	if d.config.Bundle == "" {
		errs = append(errs, errors.New("bundle: required: a bundle folder or an exported bundle"))
	} else if err := source.Check(d.config.Bundle); err != nil {
		errs = append(errs, fmt.Errorf("bundle: %w", err))
	}
	if len(errs) > 0 {
		return &packer.MultiError{Errors: errs}
	}
	return nil
}

// Execute reads the lock.
func (d *Datasource) Execute() (cty.Value, error) {
	spec := d.OutputSpec()
	lock, err := source.ReadLock(d.config.Bundle)
	if err != nil {
		return cty.NullVal(cty.EmptyObject), fmt.Errorf("kpaas-bundle: %w", err)
	}
	out := Describe(lock)
	return hcl2helper.HCL2ValueFromConfig(out, spec), nil
}

// Describe is the Output of a lock.
func Describe(l *kbundle.Lock) Output {
	out := Output{Name: l.Name, Version: l.Version, KubernetesVersion: l.KubernetesVersion,
		ArtifactCount: len(l.Artifacts), Platforms: l.Platforms, ManifestDigest: l.ManifestDigest}
	if out.Platforms == nil {
		out.Platforms = []string{}
	}
	if os := source.OSImage(l); os != nil {
		out.OSImage, out.OSDigest = os.Ref, os.Digest
	}
	return out
}

var _ packer.Datasource = (*Datasource)(nil)
