package cli

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"kpaas.dev/appliance/agent/phases"
	"kpaas.dev/appliance/agent/ready"
	"kpaas.dev/appliance/agent/version"
	"kpaas.dev/appliance/internal/names"
	"kpaas.dev/appliance/internal/progress"
	"kpaas.dev/appliance/internal/steps"
)

func newRunCmd(s *streams, o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "run",
		Short: "Run the phases on this node (the kpaas-agent systemd service)",
		Long: `Run checks each phase's postcondition and runs the phases that do not
hold yet, in order: preflight, host, runtime, seed, kubeadm, network, ready.
It resumes where the machine stands after a power cut at any point. Lines
go to the console and the journal; the record is /var/lib/kpaas/journal.json.`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			ctx := c.Context()
			rep := progress.New(s.out, progress.Terminal(false))
			h := o.host()
			// The line the media tests wait for: the bundle opened.
			r, err := ready.Check(h.Path(names.BundleDir), h.Path(names.ConfigDir))
			if err != nil {
				return err
			}
			if r.Config != "" {
				rep.Printf("kpaas-agent %s: config disk at %s (%d files)", version.Version, names.ConfigDir, len(r.ConfigFiles()))
			} else {
				rep.Printf("kpaas-agent %s: no config disk", version.Version)
			}
			rep.Printf("kpaas-agent %s: bundle %s %s (%d artifacts) ready", version.Version, r.Name, r.Version, r.Artifacts)

			mounted := map[string]bool{}
			env, err := loadEnv(h, rep)
			for err != nil {
				if !errors.Is(err, errNoConfig) {
					return err
				}
				if werr := waitForConfig(ctx, h, rep, err, mounted); werr != nil {
					return werr
				}
				env, err = loadEnv(h, rep)
			}
			j := o.journal()
			if j.Torn != nil {
				rep.Errorf("kpaas-agent: %v", j.Torn)
			}
			j.Node, j.Role = env.Node.Name, env.Node.Role
			if err := j.BeginRun(time.Now()); err != nil {
				return fmt.Errorf("journal: %w", err)
			}
			env.Journal = j
			rep.Printf("kpaas-agent: this machine is node %s (%s) of cluster %s, on %s", env.Node.Name, env.Node.Role, env.Cluster.Metadata.Name, env.NIC)
			runner := &steps.Runner{Progress: rep, Observe: func(ev steps.Event) {
				if err := j.Record(ev); err != nil {
					rep.Errorf("kpaas-agent: journal: %v", err)
				}
			}}
			if err := runner.Run(ctx, phases.Steps(env, phases.List())); err != nil {
				rep.Errorf("kpaas-agent: FAILED: %v; systemd runs the agent again (journalctl -u kpaas-agent)", err)
				return err
			}
			j.Finished = time.Now()
			return j.Save()
		},
	}
}
