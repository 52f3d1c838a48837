// Package cli maps the kpaas-agent command line onto the agent's packages:
// run (the systemd service: the phases), status, plan, reset, seed (the
// registry seed's service) and renew (the control planes' daily timer).
// There is no package-level state: Run builds a fresh command tree.
package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"kpaas.dev/appliance/agent/version"
)

// streams are the command's standard streams.
type streams struct {
	out, err io.Writer
}

// Run executes the kpaas-agent command line args.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	s := &streams{out: stdout, err: stderr}
	root := &cobra.Command{
		Use:                        "kpaas-agent",
		Short:                      "Make this machine a node of the site's K-PaaS cluster, from the boot media alone",
		Version:                    version.Version,
		SilenceUsage:               true,
		SilenceErrors:              true,
		Args:                       noArgs,
		RunE:                       func(c *cobra.Command, _ []string) error { return c.Help() },
		SuggestionsMinimumDistance: 2,
	}
	var o options
	root.PersistentFlags().StringVar(&o.root, "root", "/", "the machine's root folder (tests)")
	root.PersistentFlags().MarkHidden("root")
	root.AddCommand(newRunCmd(s, &o), newStatusCmd(s, &o), newPlanCmd(s, &o), newResetCmd(s, &o), newSeedCmd(s, &o), newRenewCmd(s, &o), newHarborMirrorCmd(s, &o), newTimeserverCmd(s, &o))
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	return root.ExecuteContext(ctx)
}

// noArgs refuses stray arguments, naming the closest command.
func noArgs(c *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], c.CommandPath())
	if sug := c.SuggestionsFor(args[0]); len(sug) > 0 {
		msg += "; did you mean " + strings.Join(sug, " or ") + "?"
	}
	return fmt.Errorf("%s (see %s --help)", msg, c.CommandPath())
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
