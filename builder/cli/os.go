package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"kpaas.dev/appliance/api/osimage/v1alpha1"
	"kpaas.dev/appliance/builder/osimage"
	"kpaas.dev/appliance/images"
)

func newOSCmd(s *streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "os",
		Short: "Build node OS images from definitions (images/*.yaml)",
	}
	cmd.AddCommand(newOSBuildCmd(s))
	return cmd
}

func newOSBuildCmd(s *streams) *cobra.Command {
	var (
		opts osimage.Options
		out  string
	)
	cmd := &cobra.Command{
		Use:   "build DEFINITION",
		Short: "Build an OS image (mmdebstrap, as root) into an OCI image layout usable as a --mirror",
		Long: `build assembles the node OS from a definition file (images/debian-12.yaml) or
the name of a built-in one (debian-12, ubuntu-22.04): a minimal systemd root
built with mmdebstrap (needs root; cached by the definition's hash under
--cache), plus a node layer with kpaas-agent, its unit and the kpaas
initramfs. It writes an OCI image layout to -o, with the image under
kpaas.local/os/<name>:<version>, and the boot files beside it:

  DIR/oci-layout, index.json, blobs/   the image (kind "os")
  DIR/boot/vmlinuz, vmlinux            the kernel (vmlinux: QEMU direct boot)
  DIR/boot/initramfs.cpio.zst          the initramfs (kpaas-init + modules; zstd)

A bundle names the image as os.image and bakes with --mirror DIR's parent
(or DIR). SOURCE_DATE_EPOCH sets every time in the layers.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			def, err := loadOSDefinition(args[0])
			if err != nil {
				return err
			}
			epoch, ok, err := sourceDateEpoch()
			if err != nil {
				return err
			}
			if ok {
				opts.Epoch = epoch.Unix()
			}
			if out == "" {
				out = filepath.Join("out", "os", def.Metadata.Name)
			}
			opts.Log = s.err
			opts.Version = Version
			res, err := osimage.Build(cmd.Context(), def, out, opts)
			if err != nil {
				return err
			}
			fmt.Fprintf(s.out, "%s %s\n", res.Digest, res.Ref)
			fmt.Fprintf(s.out, "layout:    %s\nkernel:    %s (%s)\n", out, res.Vmlinuz, res.Base.KernelRelease)
			if res.Vmlinux != "" {
				fmt.Fprintf(s.out, "vmlinux:   %s\n", res.Vmlinux)
			}
			fmt.Fprintf(s.out, "initramfs: %s\n", res.Initrd)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&out, "out", "o", "", "image layout folder to write (default out/os/<name>)")
	f.StringVar(&opts.CacheDir, "cache", "", "cache folder (default $KPAAS_CACHE/os, else <user cache dir>/kpaas/os)")
	f.StringVar(&opts.Agent, "agent", "", "prebuilt kpaas-agent binary (default: go build from the repository)")
	f.StringVar(&opts.Init, "init", "", "prebuilt kpaas-init binary (default: go build from the repository)")
	return cmd
}

// loadOSDefinition reads a definition file, or a built-in one by name.
func loadOSDefinition(arg string) (*v1alpha1.OSImage, error) {
	if !strings.ContainsAny(arg, "/.") || (!strings.HasSuffix(arg, ".yaml") && !strings.HasSuffix(arg, ".yml")) {
		if _, err := os.Stat(arg); err != nil {
			return images.Get(arg)
		}
	}
	return v1alpha1.Load(arg)
}
