// Command kpaas-agent is the first-boot agent of a K-PaaS node, started by
// systemd (kpaas-agent.service): it makes the machine a node of the site's
// cluster from the boot media alone. See agent/cli for its commands.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"kpaas.dev/appliance/agent/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := cli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "kpaas-agent: %v\n", err)
		os.Exit(1)
	}
}
