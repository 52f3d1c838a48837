// Package cli maps the kpaas command line onto the builder's libraries.
// Commands only translate flags into options; all work happens in the
// packages they call. There is no package-level state: Run builds a fresh
// command tree each time.
package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
)

// Version is set at link time (-ldflags "-X kpaas.dev/appliance/builder/cli.Version=…").
var Version = "dev"

// streams are the command's standard streams, handed to every subcommand.
type streams struct {
	in       io.Reader
	out, err io.Writer
}

// Run executes the kpaas command line args.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	root := newRootCmd(&streams{in: stdin, out: stdout, err: stderr})
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	return root.ExecuteContext(ctx)
}

func newRootCmd(s *streams) *cobra.Command {
	root := &cobra.Command{
		Use:           "kpaas",
		Short:         "Bake offline K-PaaS bundles and bootable media",
		Version:       Version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	// One constructor per verb, each in its own file.
	root.AddCommand(
		newBakeCmd(s),
		newBundleCmd(s),
		newClusterCmd(s),
		newImageCmd(s),
		newKeyCmd(s),
		newOSCmd(s),
		newPushCmd(s),
		newServeCmd(s),
		newToolchainCmd(s),
	)
	refuseUnknown(root)
	return root
}

// refuseUnknown makes every command group (root, bundle, key, …) fail on a
// word that names none of its subcommands, with a suggestion, instead of
// printing help and succeeding: a mistyped command in a CI step must fail.
// A group called alone still prints its help.
func refuseUnknown(c *cobra.Command) {
	for _, sub := range c.Commands() {
		refuseUnknown(sub)
	}
	if !c.HasSubCommands() || c.Runnable() {
		return
	}
	c.Args = cobra.ArbitraryArgs
	c.SuggestionsMinimumDistance = 2
	c.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return cmd.Help()
		}
		msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
		if sug := cmd.SuggestionsFor(args[0]); len(sug) > 0 {
			msg += fmt.Sprintf(" (did you mean %q?)", strings.Join(sug, `" or "`))
		}
		return fmt.Errorf("%s; see '%s --help'", msg, cmd.CommandPath())
	}
}

// writeJSON prints v as indented JSON: the --json output of every command.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
