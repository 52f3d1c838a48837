// Package agent holds what the node OS image carries for kpaas-agent beside
// its binary: the systemd units (in this folder), which the OS image
// builder installs into the node layer: kpaas-agent.service (enabled for
// multi-user.target) and the control planes' renew timer (enabled for
// timers.target). The agent writes the other units it needs (containerd,
// kubelet, the registry seed) itself.
//
// The commands are cmd/kpaas-agent (the first-boot agent, a systemd
// service) and cmd/kpaas-init (the initramfs's /init).
package agent

import _ "embed"

// Unit is kpaas-agent.service.
//
//go:embed kpaas-agent.service
var Unit []byte

// RenewService and RenewTimer are kpaas-agent-renew.service and .timer.
var (
	//go:embed kpaas-agent-renew.service
	RenewService []byte
	//go:embed kpaas-agent-renew.timer
	RenewTimer []byte
)
