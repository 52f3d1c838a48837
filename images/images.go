// Package images holds the project's OS image definitions (the *.yaml files
// beside this file), embedded so that the builder and tests can use them
// without a checkout. The default is debian-12: the one definition that can
// be built and booted on the project's own machines.
package images

import (
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strings"

	"kpaas.dev/appliance/api/osimage/v1alpha1"
)

//go:embed *.yaml
var definitions embed.FS

// Default is the name of the default OS image.
const Default = "debian-12"

// Names lists the embedded definitions, sorted.
func Names() []string {
	entries, _ := fs.ReadDir(definitions, ".")
	var names []string
	for _, e := range entries {
		names = append(names, strings.TrimSuffix(e.Name(), ".yaml"))
	}
	sort.Strings(names)
	return names
}

// Get parses the embedded definition called name (debian-12, ubuntu-22.04).
func Get(name string) (*v1alpha1.OSImage, error) {
	data, err := definitions.ReadFile(name + ".yaml")
	if err != nil {
		return nil, fmt.Errorf("OS image %q: no such definition (have %s)", name, strings.Join(Names(), ", "))
	}
	return v1alpha1.Parse("images/"+name+".yaml", data)
}
