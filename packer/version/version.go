// Package version is the plugin's version, which Packer reads from the
// binary (`packer-plugin-kpaas describe`) and checks against the file name
// of an installed plugin (packer-plugin-kpaas_v<version>_x5.0_linux_amd64).
package version

import "github.com/hashicorp/packer-plugin-sdk/version"

// Version and Prerelease are set at build time with -ldflags -X.
var (
	Version    = "0.1.0"
	Prerelease = ""
)

// Plugin is the plugin's version for plugin.Set.
var Plugin = version.InitializePluginVersion(Version, Prerelease)
