// Package agent holds what the node OS image carries for kpaas-agent beside
// its binary: the systemd unit (kpaas-agent.service, in this folder), which
// the OS image builder installs into the node layer and enables for
// multi-user.target.
//
// The commands are cmd/kpaas-agent (the first-boot agent, a systemd
// service) and cmd/kpaas-init (the initramfs's /init).
package agent

import _ "embed"

// Unit is kpaas-agent.service.
//
//go:embed kpaas-agent.service
var Unit []byte
