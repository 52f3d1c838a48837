package cli

import (
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"

	"kpaas.dev/appliance/internal/bundle"
	"kpaas.dev/appliance/internal/seed"
)

func newServeCmd(s *streams) *cobra.Command {
	var (
		addr        string
		allowRemote bool
		debug       bool
	)
	cmd := &cobra.Command{
		Use:   "serve BUNDLE [--addr 127.0.0.1:5000]",
		Short: "Serve a bundle as a read-only OCI registry (the registry seed)",
		Long: `Serve answers the pull side of the OCI distribution API from a bundle folder:
docker, containerd, skopeo, crane and helm can pull its images and charts.
Repositories keep their original names: docker.io/library/nginx:1.25 is
pulled as ADDR/docker.io/library/nginx:1.25, or by containerd as a mirror
(/v2/library/nginx/...?ns=docker.io). Every write is refused.

The seed listens on loopback only: every node carries its own bundle. Use
--allow-remote to listen on another address, for tests and lab set-ups.
See docs/seed.md.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !seed.IsLoopback(addr) && !allowRemote {
				return fmt.Errorf("refusing to listen on %s: not a loopback address (the seed serves its own node; pass --allow-remote to override)", addr)
			}
			store, err := bundle.Open(args[0])
			if err != nil {
				return err
			}
			level := slog.LevelInfo
			if debug {
				level = slog.LevelDebug
			}
			log := slog.New(slog.NewTextHandler(s.err, &slog.HandlerOptions{Level: level}))
			srv, err := seed.New(store, seed.WithLogger(log))
			if err != nil {
				return err
			}
			return seed.ListenAndServe(cmd.Context(), addr, srv, func(bound string) {
				fmt.Fprintf(s.out, "serving %d artifacts in %d repositories from %s on http://%s\n",
					srv.Artifacts(), len(srv.Repositories()), args[0], bound)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&addr, "addr", "127.0.0.1:5000", "address to listen on (host:port)")
	f.BoolVar(&allowRemote, "allow-remote", false, "allow a non-loopback --addr")
	f.BoolVar(&debug, "debug", false, "log every request (one line each)")
	return cmd
}
