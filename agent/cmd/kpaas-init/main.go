// Command kpaas-init is the /init of the kpaas initramfs. It loads the
// initramfs's kernel modules, finds the boot media (GPT partitions
// KPAAS-ROOT-A, KPAAS-BUNDLE, KPAAS-STATE, or an ISO labelled KPAAS),
// mounts the root squashfs under an overlay, the state partition (grown to
// the disk's end and formatted on first boot) for /var and the bundle at
// /run/kpaas/bundle, and switches root to systemd. On any failure it says
// why on the console and opens a rescue shell instead of letting the kernel
// panic; leaving the shell retries the boot.
//
// Options come from the kernel command line: kpaas.root=NAME, kpaas.live,
// kpaas.wait=SECONDS, kpaas.modules=a,b, kpaas.debug, init=PATH.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"kpaas.dev/appliance/agent/earlyboot"
	"kpaas.dev/appliance/agent/version"
)

func main() {
	ctx := context.Background()
	for attempt := 1; ; attempt++ {
		err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
		// run returns only on failure: success execs systemd.
		m := &earlyboot.Machine{Console: os.Stdout}
		m.Rescue(os.Stdin, err)
		earlyboot.Reset()
		fmt.Fprintf(os.Stdout, "kpaas-init: retrying the boot (attempt %d)\n", attempt+1)
		time.Sleep(time.Second)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if err := earlyboot.MountKernelFS(); err != nil {
		return err
	}
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return fmt.Errorf("reading the kernel command line: %w", err)
	}
	cfg, err := earlyboot.ParseCmdline(string(cmdline))
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "kpaas-init %s: starting\n", version.Version)
	m := &earlyboot.Machine{Console: stdout, Config: cfg}
	return m.Boot(ctx)
}
