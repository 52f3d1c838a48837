package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"kpaas.dev/appliance/agent/phases"
	"kpaas.dev/appliance/internal/progress"
)

func newHarborMirrorCmd(s *streams, o *options) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "harbor-mirror",
		Short: "Make containerd ask the cluster's Harbor first once Harbor holds every image of the bundle (kpaas-agent-harbor.timer)",
		Long: `Asks the cluster's Harbor, without credentials and by digest, for every
image of the bundle. When it holds them all, rewrites containerd's hosts.toml
files so that pulls ask Harbor first and the node's seed after it, records
that in /var/lib/kpaas/harbor-mirror and stops kpaas-agent-harbor.timer.
Otherwise says why not yet and changes nothing; pulls keep going to the seed.
Exits 0 in both cases; a site without Harbor has nothing to do.`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			env, err := loadEnv(o.host(), progress.New(s.out, progress.Terminal(false)))
			if err != nil {
				return err
			}
			res, err := phases.SwitchToHarbor(c.Context(), env)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(s.out, res)
			}
			switch {
			case res.Harbor == "":
				fmt.Fprintf(s.out, "kpaas-agent harbor-mirror: the site has no Harbor: pulls go to the node's seed\n")
			case res.Switched:
				fmt.Fprintf(s.out, "kpaas-agent harbor-mirror: containerd on %s asks Harbor at %s first, then the node's seed\n", env.Node.Name, res.Harbor)
			default:
				fmt.Fprintf(s.out, "kpaas-agent harbor-mirror: not yet, pulls go to the node's seed: %s\n", res.Reason)
			}
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return c
}
