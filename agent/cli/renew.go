package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"kpaas.dev/appliance/agent/phases"
	"kpaas.dev/appliance/internal/progress"
)

func newRenewCmd(s *streams, o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "renew",
		Short: "On a control plane: keep the bootstrap token valid, refresh the cluster's node status, unseal a restarted Vault (the daily timer)",
		Args:  noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			env, err := loadEnv(o.host(), progress.New(s.out, progress.Terminal(false)))
			if err != nil {
				return err
			}
			if !env.IsControlPlane() {
				fmt.Fprintf(s.out, "kpaas-agent renew: %s is a worker: nothing to do\n", env.Node.Name)
				return nil
			}
			if err := phases.RenewToken(c.Context(), env); err != nil {
				return fmt.Errorf("renewing the bootstrap token: %w", err)
			}
			if err := phases.PublishStatus(c.Context(), env); err != nil {
				return fmt.Errorf("publishing the node status: %w", err)
			}
			if err := phases.UnsealVaults(c.Context(), env); err != nil {
				return fmt.Errorf("unsealing vault: %w", err)
			}
			fmt.Fprintf(s.out, "kpaas-agent renew: bootstrap token valid for another 24h; node status published\n")
			return nil
		},
	}
}
