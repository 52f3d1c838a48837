package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"kpaas.dev/appliance/agent/phases"
	"kpaas.dev/appliance/internal/progress"

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
			if err := tw.Flush(); err != nil {
				return err
			}
			return printReleases(c.Context(), s, o)
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print the journal as JSON")
	return c
}

// printReleases shows the platform's releases: on the first control
// plane as its agent last saw them; on any other node one line, from the
// records in the cluster (read with the kubelet's credentials).
func printReleases(ctx context.Context, s *streams, o *options) error {
	b, err := os.ReadFile(filepath.Join(o.root, phases.PlatformStatusFile))
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		env, err := loadEnv(o.host(), progress.Discard())
		if err != nil || env.Lock.Platform == nil || env.IsFirstControlPlane() || !env.Host.Exists(phases.KubeletConf) {
			return nil
		}
		fmt.Fprintf(s.out, "\n%s\n", phases.PlatformProgress(ctx, env))
		return nil
	}
	var rs []phases.ReleaseStatus
	if err := json.Unmarshal(b, &rs); err != nil || len(rs) == 0 {
		return nil
	}
	fmt.Fprintln(s.out)
	tw := tabwriter.NewWriter(s.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RELEASE\tSTATE\tSECONDS\tURL\tERROR")
	for _, r := range rs {
		e, _, _ := strings.Cut(r.Error, "\n")
		fmt.Fprintf(tw, "%s\t%s\t%.1f\t%s\t%s\n", r.Name, r.State, r.Seconds, r.URL, e)
	}
	return tw.Flush()
}
