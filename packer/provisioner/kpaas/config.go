//go:generate go tool packer-sdc mapstructure-to-hcl2 -type Config

package kpaas

import (
	"crypto/ed25519"
	"fmt"
	"os"
	"path"
	"strings"

	"github.com/hashicorp/packer-plugin-sdk/common"
	"github.com/hashicorp/packer-plugin-sdk/packer"
	"github.com/hashicorp/packer-plugin-sdk/template/config"
	"github.com/hashicorp/packer-plugin-sdk/template/interpolate"

	cluster "kpaas.dev/appliance/api/cluster/v1alpha1"
	"kpaas.dev/appliance/internal/bundle"
	"kpaas.dev/appliance/packer/internal/source"
	"kpaas.dev/appliance/packer/internal/units"
)

// Defaults of the provisioner's paths and command.
const (
	// DefaultMediaDirectory holds on the machine what kpaas media hold:
	// bundle/ (bound read-only at /run/kpaas/bundle at boot), esp/ (at
	// /run/kpaas/esp: kpaas/bundle.pub, kpaas/cluster.yaml) and config/
	// (at /run/kpaas/config). Not under /var/lib/kpaas, which `kpaas-agent
	// reset` deletes: a reset node keeps its bundle, as a media node does.
	DefaultMediaDirectory = "/var/lib/kpaas-media"
	// DefaultStagingDirectory is where uploads land before they are moved
	// into place: on disk (/tmp may be a small tmpfs), and usually on the
	// file system of the media directory, so the move is a rename.
	DefaultStagingDirectory = "/var/tmp"
	// DefaultExecuteCommand runs the provisioner's scripts as root: as
	// they are when the communicator's user is root, else with sudo
	// (without a password prompt: -n).
	DefaultExecuteCommand = `if [ "$(id -u)" = 0 ]; then sh -eu '{{.Path}}'; else sudo -n sh -eu '{{.Path}}'; fi`
)

// Config is the provisioner's configuration.
type Config struct {
	common.PackerConfig `mapstructure:",squash"`

	// The bundle to install: a folder made by `kpaas bake`, or an export
	// made by `kpaas bundle export` (a tar, the first part `.000` of a
	// split export, or its `.sha256sums` list). Required.
	Bundle string `mapstructure:"bundle" required:"true"`
	// The kpaas-agent binary to install at /usr/bin/kpaas-agent. Default:
	// the one in the bundle's OS image (its node layer), so the agent is
	// the one the bundle's media would boot.
	AgentBinary string `mapstructure:"agent_binary"`
	// A cluster configuration (`kpaas cluster init`), checked as `kpaas
	// cluster lint` does, installed where the agent reads it
	// (/run/kpaas/config/cluster.yaml at boot). Without it the node waits
	// for a config disk (KPAAS-CONFIG), as a media node does.
	ClusterConfig string `mapstructure:"cluster_config"`
	// An ed25519 public key (PEM, `kpaas key generate`) that must have
	// signed the bundle (checked here, before anything is uploaded); it is
	// installed where the agent looks for the media's key, and the agent
	// refuses a bundle it does not verify.
	PublicKey string `mapstructure:"public_key"`
	// Where the bundle, the key and the configuration live on the machine
	// (absolute, no spaces). Default: `/var/lib/kpaas-media`.
	MediaDirectory string `mapstructure:"media_directory"`
	// A folder on the machine, writable by the communicator's user, where
	// uploads land before they are checked and moved into place. Default:
	// `/var/tmp`.
	StagingDirectory string `mapstructure:"staging_directory"`
	// How a script runs as root; `{{.Path}}` is the script. Default: as is
	// when the user is root, else through `sudo -n`.
	ExecuteCommand string `mapstructure:"execute_command"`
	// Uploads the OS image's layers too. Default: false; the machine has
	// its own OS, and the agent expects them missing, as on media.
	KeepOSLayers bool `mapstructure:"keep_os_layers"`
	// Free space the machine must have beyond what is uploaded, e.g. `2G`
	// (the node's containers and logs). Default: `2G`.
	MinFreeSpace string `mapstructure:"min_free_space"`

	ctx       interpolate.Context
	publicKey ed25519.PublicKey
	minFree   int64
}

// Prepare decodes the raw configurations and checks them, reporting every
// problem at once, each with its field's name.
func (c *Config) Prepare(raws ...interface{}) error {
	if err := config.Decode(c, &config.DecodeOpts{
		PluginType:         "kpaas",
		Interpolate:        true,
		InterpolateContext: &c.ctx,
		InterpolateFilter:  &interpolate.RenderFilter{Exclude: []string{"execute_command"}},
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
	} else if c.AgentBinary == "" && source.IsFolder(c.Bundle) {
		if l, err := source.ReadLock(c.Bundle); err == nil && source.OSImage(l) == nil {
			add("agent_binary", "required: bundle %s %s has no OS image to take kpaas-agent from", l.Name, l.Version)
		}
	}
	if c.AgentBinary != "" {
		if fi, err := os.Stat(c.AgentBinary); err != nil {
			add("agent_binary", "%v", err)
		} else if !fi.Mode().IsRegular() {
			add("agent_binary", "%s is not a file", c.AgentBinary)
		}
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
	if c.MediaDirectory == "" {
		c.MediaDirectory = DefaultMediaDirectory
	}
	if c.StagingDirectory == "" {
		c.StagingDirectory = DefaultStagingDirectory
	}
	for _, f := range []struct{ name, v string }{{"media_directory", c.MediaDirectory}, {"staging_directory", c.StagingDirectory}} {
		if !path.IsAbs(f.v) || strings.ContainsAny(f.v, " \t\n'\"\\$`") || path.Clean(f.v) == "/" {
			add(f.name, "%q: want an absolute path other than / without spaces or quotes", f.v)
		}
	}
	if m := path.Clean(c.MediaDirectory); m == "/run" || strings.HasPrefix(m, "/run/") || strings.HasPrefix(m, "/tmp") {
		add("media_directory", "%s does not survive a reboot", c.MediaDirectory)
	}
	if c.ExecuteCommand == "" {
		c.ExecuteCommand = DefaultExecuteCommand
	}
	if !strings.Contains(c.ExecuteCommand, "{{.Path}}") {
		add("execute_command", "%q does not run the script: it has no {{.Path}}", c.ExecuteCommand)
	}
	if c.MinFreeSpace == "" {
		c.MinFreeSpace = "2G"
	}
	n, err := units.ParseSize(c.MinFreeSpace)
	if err != nil {
		add("min_free_space", "%v", err)
	}
	c.minFree = n
	if len(errs) > 0 {
		return &packer.MultiError{Errors: errs}
	}
	return nil
}
