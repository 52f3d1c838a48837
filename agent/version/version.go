// Package version holds the agent binaries' version, set at link time:
// -ldflags "-X kpaas.dev/appliance/agent/version.Version=…".
package version

// Version of kpaas-agent and kpaas-init.
var Version = "dev"
