package cli

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

func newStatusCmd(s *streams, o *options) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "status",
		Short: "Show the agent's phases on this node, from its journal",
		Args:  noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			j := o.journal()
			if j.Torn != nil {
				return j.Torn
			}
			if asJSON {
				return writeJSON(s.out, j)
			}
			if j.Runs == 0 {
				fmt.Fprintln(s.out, "kpaas-agent has not run on this machine")
				return nil
			}
			state := "running or stopped"
			if !j.Finished.IsZero() {
				state = "finished " + j.Finished.UTC().Format("2006-01-02 15:04:05Z")
			}
			fmt.Fprintf(s.out, "node %s (%s), run %d started %s, %s\n\n", j.Node, j.Role, j.Runs, j.RunStarted.UTC().Format("2006-01-02 15:04:05Z"), state)
			tw := tabwriter.NewWriter(s.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PHASE\tSTATE\tSECONDS\tRUN\tERROR")
			for _, p := range j.Phases {
				fmt.Fprintf(tw, "%s\t%s\t%.1f\t%d\t%s\n", p.Name, p.State, p.Seconds, p.Boot, p.Error)
			}
			return tw.Flush()
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print the journal as JSON")
	return c
}
