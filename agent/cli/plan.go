package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"kpaas.dev/appliance/agent/phases"
	"kpaas.dev/appliance/internal/progress"
)

func newPlanCmd(s *streams, o *options) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "plan",
		Short: "Show the phases and what each would do on this node, doing nothing",
		Long: `Plan names this node and, for every phase, whether its postcondition
holds already (asked read-only of the machine) and what running it would do.`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			env, err := loadEnv(o.host(), progress.Discard())
			if err != nil {
				return err
			}
			type planned struct {
				Phase   string   `json:"phase"`
				Holds   *bool    `json:"holds,omitempty"`
				Actions []string `json:"actions"`
			}
			var out []planned
			for _, p := range phases.List() {
				pl := planned{Phase: p.Name, Actions: p.Plan(env)}
				if p.Check != nil {
					ok, err := p.Check(c.Context(), env)
					if err == nil {
						pl.Holds = &ok
					}
				}
				out = append(out, pl)
			}
			if asJSON {
				return writeJSON(s.out, map[string]any{"node": env.Node.Name, "role": env.Node.Role, "phases": out})
			}
			fmt.Fprintf(s.out, "node %s (%s) of cluster %s, address %s on %s\n", env.Node.Name, env.Node.Role, env.Cluster.Metadata.Name, env.Node.Address, env.NIC)
			for i, p := range out {
				state := "runs on every boot"
				if p.Holds != nil {
					state = "to do"
					if *p.Holds {
						state = "already done"
					}
				}
				fmt.Fprintf(s.out, "\nphase %s (%d/%d): %s\n", p.Phase, i+1, len(out), state)
				for _, a := range p.Actions {
					fmt.Fprintf(s.out, "  - %s\n", a)
				}
			}
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print the plan as JSON")
	return c
}
