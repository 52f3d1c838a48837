//go:generate go tool packer-sdc mapstructure-to-hcl2 -type Config

package kpaas

import (
	"crypto/ed25519"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/hashicorp/packer-plugin-sdk/common"
	"github.com/hashicorp/packer-plugin-sdk/packer"
	"github.com/hashicorp/packer-plugin-sdk/template/config"
	"github.com/hashicorp/packer-plugin-sdk/template/interpolate"

	cluster "kpaas.dev/appliance/api/cluster/v1alpha1"
	"kpaas.dev/appliance/builder/disk"
	"kpaas.dev/appliance/internal/bundle"
	"kpaas.dev/appliance/packer/internal/source"
	"kpaas.dev/appliance/packer/internal/units"
)

// Config is the builder's configuration: the flags of `kpaas image build`
// as template fields.
type Config struct {
	common.PackerConfig `mapstructure:",squash"`

	// The bundle to write media from: a folder made by `kpaas bake`, or an
	// export made by `kpaas bundle export` (a tar, the first part `.000`
	// of a split export, or its `.sha256sums` list), which is imported
	// (every part and blob checked) into a temporary folder beside the
	// output. Required.
	Bundle string `mapstructure:"bundle" required:"true"`
	// The media to write: any of `raw` (a GPT disk), `qcow2` (the same
	// disk as qcow2) and `iso` (a hybrid BIOS/UEFI ISO that runs live or
	// installs). Default: `["qcow2"]`, what a VM template wants.
	Formats []string `mapstructure:"formats"`
	// The size of the raw and qcow2 disks, e.g. `20G` or `20480M` (K, M,
	// G, T: powers of 1024; KB, MB, …: of 1000). Default: just large
	// enough; the node's state partition grows into any space after it.
	DiskSize string `mapstructure:"disk_size"`
	// A cluster configuration (`kpaas cluster init`), checked as `kpaas
	// cluster lint` does and put on the media's ESP at
	// `/kpaas/cluster.yaml`. Secrets never go on the media: they travel
	// on each node's config disk.
	ClusterConfig string `mapstructure:"cluster_config"`
	// An ed25519 public key (PEM, `kpaas key generate`) that must have
	// signed the bundle; it goes on the media, and the node's agent
	// refuses a bundle it does not verify.
	PublicKey string `mapstructure:"public_key"`
	// Makes the ISO an unattended installer onto this disk: `auto` (the
	// machine's only empty disk) or a device such as `/dev/sda`. Default:
	// the ISO runs live and offers an install entry.
	Install string `mapstructure:"install"`
	// The folder the media are written into; it must not exist unless
	// `packer build -force` is given. Default: `output-<build name>`.
	OutputDirectory string `mapstructure:"output_directory"`
	// The media's file name without extension: `<output_name>.qcow2`, …
	// Default: the build's name (`source "kpaas" "NAME"`).
	OutputName string `mapstructure:"output_name"`
	// Stores the OS image's layers and the node files' blobs in the
	// media's bundle partition too (a complete, verifiable bundle on the
	// media, at the cost of their size). Default: false, the root file
	// system holds their content.
	KeepOSLayers bool `mapstructure:"keep_os_layers"`
	// Kernel arguments appended to the OS image's command line.
	Cmdline string `mapstructure:"cmdline"`

	ctx       interpolate.Context
	formats   []disk.Format
	diskSize  int64
	publicKey ed25519.PublicKey
}

// DefaultFormat is what the builder writes when formats is not set.
const DefaultFormat = disk.QCOW2

// Prepare decodes the raw configurations and checks them, reporting every
// problem at once, each with its field's name.
func (c *Config) Prepare(raws ...interface{}) error {
	if err := config.Decode(c, &config.DecodeOpts{
		PluginType:         BuilderID,
		Interpolate:        true,
		InterpolateContext: &c.ctx,
	}, raws...); err != nil {
		return err
	}
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}

	if c.Bundle == "" {
		add("bundle", "required: a bundle folder or an exported bundle")
	} else if err := source.Check(c.Bundle); err != nil {
		add("bundle", "%v", err)
	}

	if len(c.Formats) == 0 {
		c.Formats = []string{string(DefaultFormat)}
	}
	c.formats = nil
	for i, f := range c.Formats {
		df, err := disk.ParseFormat(strings.TrimSpace(f))
		switch {
		case err != nil:
			add(fmt.Sprintf("formats[%d]", i), "%q is not a format: want raw, qcow2 or iso", f)
		case slices.Contains(c.formats, df):
			add(fmt.Sprintf("formats[%d]", i), "%s is listed twice", df)
		default:
			c.formats = append(c.formats, df)
		}
	}

	c.diskSize = 0
	if c.DiskSize != "" {
		n, err := units.ParseSize(c.DiskSize)
		if err != nil {
			add("disk_size", "%v", err)
		}
		c.diskSize = n
	}

	if c.ClusterConfig != "" {
		if _, err := cluster.ParseFile(c.ClusterConfig); err != nil {
			add("cluster_config", "%v", err)
		}
	}

	c.publicKey = nil
	if c.PublicKey != "" {
		pub, err := bundle.LoadPublicKey(c.PublicKey)
		if err != nil {
			add("public_key", "%v", err)
		}
		c.publicKey = pub
	}

	if c.Install != "" && c.Install != "auto" && !strings.HasPrefix(c.Install, "/dev/") {
		add("install", "%q: want auto or a disk such as /dev/sda", c.Install)
	}
	if c.Install != "" && !slices.Contains(c.formats, disk.ISO) {
		add("install", "makes the ISO an installer, but formats has no iso")
	}

	if c.OutputDirectory == "" {
		c.OutputDirectory = "output-" + c.PackerBuildName
		if c.PackerBuildName == "" {
			c.OutputDirectory = "output-kpaas"
		}
	}
	if fi, err := os.Stat(c.OutputDirectory); err == nil {
		if !fi.IsDir() {
			add("output_directory", "%s is not a folder", c.OutputDirectory)
		} else if des, _ := os.ReadDir(c.OutputDirectory); len(des) > 0 && !c.PackerForce {
			add("output_directory", "%s exists and is not empty (packer build -force replaces it)", c.OutputDirectory)
		}
	}
	if c.OutputName == "" {
		c.OutputName = c.PackerBuildName
		if c.OutputName == "" {
			c.OutputName = "kpaas"
		}
	}
	if c.OutputName != filepath.Base(c.OutputName) || strings.HasPrefix(c.OutputName, ".") {
		add("output_name", "%q must be a file name (no folders, not starting with a dot)", c.OutputName)
	}
	if len(errs) > 0 {
		return &packer.MultiError{Errors: errs}
	}
	return nil
}
