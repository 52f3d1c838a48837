// Command kpaas bakes offline K-PaaS bundles and writes bootable media from them.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"kpaas.dev/appliance/builder/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := cli.Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "kpaas:", err)
		os.Exit(1)
	}
}
