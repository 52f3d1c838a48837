package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"kpaas.dev/appliance/internal/names"
)

// resetPaths are what reset deletes, beside kubeadm reset's own work.
var resetPaths = []string{
	"/etc/kubernetes", "/var/lib/etcd", "/var/lib/kubelet", "/etc/cni/net.d",
	"/etc/kpaas", "/var/lib/containerd", names.StateDir,
}

func newResetCmd(s *streams, o *options) *cobra.Command {
	var yes bool
	c := &cobra.Command{
		Use:   "reset --yes",
		Short: "Take this node out of the cluster and forget everything the agent did here",
		Long: `Reset stops kubelet, runs kubeadm reset, stops containerd and the seed,
and deletes the cluster state and the agent's journal, so that the next
boot (or kpaas-agent run) sets the node up from scratch. It does not drain
the node or remove it from the cluster: do that first (kubectl drain, kubectl
delete node). Without --yes it only says what it would delete.`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if !yes {
				fmt.Fprintln(s.out, "kpaas-agent reset would stop kubelet, containerd and the seed, run kubeadm reset, and delete:")
				for _, p := range resetPaths {
					fmt.Fprintln(s.out, "  "+p)
				}
				return fmt.Errorf("nothing done: run kpaas-agent reset --yes to do it")
			}
			h := o.host()
			ctx := c.Context()
			h.Run(ctx, "systemctl", "stop", "kubelet")
			if h.Exists("/etc/kubernetes") {
				if _, err := h.Run(ctx, "kubeadm", "reset", "--force"); err != nil {
					fmt.Fprintf(s.err, "kpaas-agent reset: %v (going on)\n", err)
				}
			}
			h.Run(ctx, "systemctl", "stop", "containerd", "kpaas-seed.service")
			for _, p := range resetPaths {
				if err := h.Remove(p); err != nil {
					return err
				}
				fmt.Fprintf(s.out, "deleted %s\n", p)
			}
			return nil
		},
	}
	c.Flags().BoolVar(&yes, "yes", false, "really do it")
	return c
}
