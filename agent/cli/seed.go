package cli

import (
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"

	"kpaas.dev/appliance/internal/bundle"
	"kpaas.dev/appliance/internal/names"
	"kpaas.dev/appliance/internal/seed"
)

func newSeedCmd(s *streams, o *options) *cobra.Command {
	var bundleDir, addr string
	c := &cobra.Command{
		Use:   "seed",
		Short: "Serve the media's bundle as a read-only registry on 127.0.0.1 (the kpaas-seed service)",
		Args:  noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if !seed.IsLoopback(addr) {
				return fmt.Errorf("--addr %s: the seed listens on loopback only", addr)
			}
			store, err := bundle.Open(bundleDir)
			if err != nil {
				return err
			}
			// No time stamps: journald keeps them.
			noTime := func(groups []string, a slog.Attr) slog.Attr {
				if len(groups) == 0 && a.Key == slog.TimeKey {
					return slog.Attr{}
				}
				return a
			}
			log := slog.New(slog.NewTextHandler(s.err, &slog.HandlerOptions{ReplaceAttr: noTime}))
			srv, err := seed.New(store, seed.WithLogger(log.With("component", "kpaas-seed")))
			if err != nil {
				return err
			}
			return seed.ListenAndServe(c.Context(), addr, srv, func(a string) {
				fmt.Fprintf(s.out, "kpaas-agent seed: serving %d artifacts of %s on %s\n", srv.Artifacts(), bundleDir, a)
			})
		},
	}
	c.Flags().StringVar(&bundleDir, "bundle", names.BundleDir, "the bundle's folder")
	c.Flags().StringVar(&addr, "addr", "127.0.0.1:5000", "the loopback address to listen on")
	return c
}
