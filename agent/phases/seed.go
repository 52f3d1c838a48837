package phases

import (
	"context"
	"fmt"
	"time"

	"kpaas.dev/appliance/internal/names"
	"kpaas.dev/appliance/internal/retry"
)

const seedUnit = "/etc/systemd/system/kpaas-seed.service"

// SeedUnitName is the seed's systemd service.
const SeedUnitName = "kpaas-seed.service"

// seed starts the registry seed, the read-only registry over the media's
// bundle on 127.0.0.1, as its own service (`kpaas-agent seed`): the node
// pulls from it long after the agent is done, and systemd restarts it.
func seed() Phase {
	return Phase{
		Name: "seed",
		Plan: func(e *Env) []string {
			return append(filePlan(seedFiles(e)),
				"systemctl daemon-reload; systemctl enable --now "+SeedUnitName,
				"wait until "+seedURL(e)+"/v2/ answers")
		},
		Check: func(ctx context.Context, e *Env) (bool, error) {
			if !e.filesInPlace(seedFiles(e)) {
				return false, nil
			}
			if _, err := e.Host.Run(ctx, "systemctl", "is-active", "--quiet", SeedUnitName); err != nil {
				return false, nil
			}
			return e.Probe(ctx, seedURL(e)+"/v2/") == nil, nil
		},
		Run: func(ctx context.Context, e *Env) error {
			changed, err := e.writeFiles(seedFiles(e))
			if err != nil {
				return err
			}
			action := "start"
			if changed {
				action = "restart"
			}
			for _, c := range [][]string{{"systemctl", "daemon-reload"}, {"systemctl", "enable", SeedUnitName}, {"systemctl", action, SeedUnitName}} {
				if _, err := e.Host.Run(ctx, c[0], c[1:]...); err != nil {
					return err
				}
			}
			var last error
			err = e.waitFor(ctx, "the seed at "+seedURL(e), 60, func() bool {
				last = e.Probe(ctx, seedURL(e)+"/v2/")
				return last == nil
			})
			if err != nil && last != nil {
				return fmt.Errorf("%w: %v (journalctl -u %s)", err, last, SeedUnitName)
			}
			return err
		},
		Retry: retry.Policy{Attempts: 2, Base: 5 * time.Second},
	}
}

func seedFiles(e *Env) []file {
	unit := fmt.Sprintf(`# Written by kpaas-agent: the node's read-only registry over the media's bundle.
[Unit]
Description=K-PaaS registry seed (read-only, 127.0.0.1:%[1]d)
After=local-fs.target
ConditionPathIsDirectory=%[2]s

[Service]
ExecStart=%[3]s seed --bundle %[2]s --addr 127.0.0.1:%[1]d
Restart=always
RestartSec=2
# Its pull records (one line per image manifest served) go to the console
# too: what the node pulled, and that it came from the media.
StandardOutput=journal
StandardError=journal+console
DynamicUser=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
NoNewPrivileges=yes

[Install]
WantedBy=multi-user.target
`, e.Cluster.Seed.Port, names.BundleDir, e.AgentBinary)
	return []file{{seedUnit, 0o644, []byte(unit)}}
}
