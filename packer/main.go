// Command packer-plugin-kpaas is the K-PaaS appliance's Packer plugin: the
// builder `kpaas` (media from a bundle), the provisioner `kpaas` (a
// machine another builder made becomes a K-PaaS node) and the data source
// `kpaas-bundle` (a bundle's name, version and OS image). Packer starts it
// and talks to it over its plugin protocol (x5.0); see docs/README.md.
package main

import (
	"fmt"
	"os"

	"github.com/hashicorp/packer-plugin-sdk/plugin"

	builder "kpaas.dev/appliance/packer/builder/kpaas"
	"kpaas.dev/appliance/packer/datasource/bundle"
	provisioner "kpaas.dev/appliance/packer/provisioner/kpaas"
	"kpaas.dev/appliance/packer/version"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run() error {
	set := plugin.NewSet()
	set.RegisterBuilder(plugin.DEFAULT_NAME, new(builder.Builder))
	set.RegisterProvisioner(plugin.DEFAULT_NAME, new(provisioner.Provisioner))
	set.RegisterDatasource("bundle", new(bundle.Datasource))
	set.SetVersion(version.Plugin)
	return set.Run()
}
