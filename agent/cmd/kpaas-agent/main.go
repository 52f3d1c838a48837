// Command kpaas-agent is the first-boot agent of a K-PaaS node, started by
// systemd (kpaas-agent.service). For now it checks the bundle kpaas-init
// mounted at /run/kpaas/bundle and the config disk, and prints
//
//	kpaas-agent <version>: bundle <name> <version> (<n> artifacts) ready
//
// on the console, the line the QEMU tests wait for.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"kpaas.dev/appliance/agent/ready"
	"kpaas.dev/appliance/agent/version"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "kpaas-agent: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("kpaas-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	bundleDir := fs.String("bundle", ready.BundleDir, "the bundle's folder")
	configDir := fs.String("config", ready.ConfigDir, "the config disk's folder")
	if err := fs.Parse(args); err != nil {
		return err
	}
	r, err := ready.Check(*bundleDir, *configDir)
	if err != nil {
		return err
	}
	if r.Config != "" {
		fmt.Fprintf(stdout, "kpaas-agent %s: config disk at %s (%d files)\n", version.Version, r.Config, len(r.ConfigFiles()))
	} else {
		fmt.Fprintf(stdout, "kpaas-agent %s: no config disk\n", version.Version)
	}
	fmt.Fprintf(stdout, "kpaas-agent %s: bundle %s %s (%d artifacts) ready\n", version.Version, r.Name, r.Version, r.Artifacts)
	return ctx.Err()
}
