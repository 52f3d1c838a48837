package cli

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"kpaas.dev/appliance/builder/toolchain"
)

func newToolchainCmd(s *streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "toolchain",
		Short: "Build the node toolchain and control-plane images from Go module sources",
	}
	cmd.AddCommand(newToolchainBuildCmd(s))
	return cmd
}

func newToolchainBuildCmd(s *streams) *cobra.Command {
	var opts toolchain.Options
	var verbose bool
	cmd := &cobra.Command{
		Use:   "build",
		Short: "Build (or take from the cache) Kubernetes, etcd, containerd, runc, CNI, CoreDNS, pause and kube-router; write the mirror",
		Long: `build compiles every component with the go command from the pinned scratch
modules in toolchain/ (run it from the repository), caches each one under
--cache keyed by component, version, Go version and pins, assembles OCI images
for everything kubeadm runs as a container, and writes --out:

  OUT/files/   kubeadm kubelet kubectl containerd … cni-plugins-linux-amd64-<ver>.tgz SHA256SUMS
  OUT/oci/     an OCI image layout, one index entry per full image reference

A cold build takes about 30–45 minutes on 2 cores; a cached one seconds.
Before compiling anything it checks the host (gcc, binutils, static libc and
libseccomp, pkg-config, apt lists, the go version) and names the Debian
packages that are missing. A component being compiled prints its expected
cold time when it starts and a line every minute while it runs.
SOURCE_DATE_EPOCH sets the time of every image file and config (default 0).

--harbor-portal adds Harbor's web portal, an Angular application built with
npm from Harbor's own sources and lockfile, as the image the official chart
names; without it the chart's portal runs a stand-in page (docs/harbor.md).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			epoch, ok, err := sourceDateEpoch()
			if err != nil {
				return err
			}
			if ok {
				opts.SourceDateEpoch = epoch
			}
			opts.Progress = s.err
			if verbose {
				opts.Log = s.err
			}
			res, err := toolchain.Build(cmd.Context(), opts)
			if err != nil {
				return err
			}
			for _, img := range res.Images {
				fmt.Fprintf(s.out, "%s %s\n", img.Digest, img.Ref)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.CacheDir, "cache", "", "cache folder (default $KPAAS_CACHE/toolchain, else <user cache dir>/kpaas/toolchain)")
	f.StringVar(&opts.MirrorDir, "out", "out/mirror", "mirror folder to write (empty: only fill the cache)")
	f.StringVar(&opts.SourceDir, "src", "", "folder of the scratch modules (default: toolchain/ of the enclosing repository)")
	f.StringVar(&opts.Go, "go", envOr("GO", "go"), "go command")
	f.BoolVar(&opts.Offline, "offline", false, "set GOPROXY=off (and npm's offline mode): build only from the module cache (and npm's cache)")
	f.BoolVar(&opts.HarborPortal, "harbor-portal", false, "also build Harbor's web portal from its npm sources (Node.js "+toolchain.MinNodeVersion+" or newer, npm and the npm registry; 10–15 min more) and its image "+toolchain.HarborPortalImage)
	f.BoolVarP(&verbose, "verbose", "v", false, "print the output of failed build commands in full")
	return cmd
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
