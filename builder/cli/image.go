package cli

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	cluster "kpaas.dev/appliance/api/cluster/v1alpha1"
	"kpaas.dev/appliance/builder/disk"
	"kpaas.dev/appliance/builder/image"
	"kpaas.dev/appliance/internal/bundle"
	"kpaas.dev/appliance/internal/progress"
)

func newImageCmd(s *streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Write bootable media (raw, qcow2, ISO) from a bundle",
	}
	cmd.AddCommand(newImageBuildCmd(s))
	return cmd
}

func newImageBuildCmd(s *streams) *cobra.Command {
	var (
		opts          image.Options
		formats       []string
		keyPath, size string
		asJSON, quiet bool
	)
	cmd := &cobra.Command{
		Use:   "build --bundle DIR -o OUT [--format raw,qcow2,iso]",
		Short: "Write boot media from a bundle's OS image: OUT.raw, OUT.qcow2, OUT.iso",
		Long: `build verifies the bundle (and its signature with --key), takes its OS image
(os.image in the bundle manifest), builds the root squashfs straight from the
image's layers plus the bundle's node files (each file with a target, e.g.
kubelet at /usr/local/bin/kubelet), and writes each format:

  OUT.raw    GPT disk, boots under legacy BIOS and UEFI: EFI (systemd-boot,
             syslinux, kernel, initramfs, --config), KPAAS-ROOT-A (root
             squashfs), KPAAS-ROOT-B (empty, A/B updates), KPAAS-BUNDLE (the
             bundle), KPAAS-STATE (formatted on first boot)
  OUT.qcow2  the same disk as qcow2
  OUT.iso    hybrid ISO (legacy BIOS + UEFI, CD or USB stick), label KPAAS;
             its install entry writes the raw disk

The OS image's layers and the node files' blobs are left out of KPAAS-BUNDLE
(the root squashfs holds their content) unless --keep-os-layers. Nothing is
written unless every format succeeds. SOURCE_DATE_EPOCH sets the media's one
timestamp (default: the OS image's creation time); the raw and qcow2 images
are reproducible. --config is checked as kpaas cluster lint does; it goes
on the ESP alone (secrets travel only on config disks, docs/cluster.md).
See docs/media.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if opts.Bundle == "" || opts.Out == "" {
				return fmt.Errorf("--bundle and --out are required")
			}
			for _, f := range formats {
				for _, p := range strings.Split(f, ",") {
					if p = strings.TrimSpace(p); p != "" {
						opts.Formats = append(opts.Formats, disk.Format(p))
					}
				}
			}
			if opts.Config != "" {
				if _, err := cluster.ParseFile(opts.Config); err != nil {
					return fmt.Errorf("--config: %w", err)
				}
			}
			if keyPath != "" {
				pub, err := bundle.LoadPublicKey(keyPath)
				if err != nil {
					return err
				}
				opts.PublicKey = pub
			}
			if size != "" {
				n, err := parseSize(size)
				if err != nil {
					return fmt.Errorf("--disk-size: %w", err)
				}
				opts.DiskSize = n
			}
			epoch, ok, err := sourceDateEpoch()
			if err != nil {
				return err
			}
			if ok {
				opts.Time = epoch
			}
			opts.Progress = progress.New(s.err, progress.Quiet(quiet))
			sum, err := image.Build(cmd.Context(), opts)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(s.out, sum)
			}
			printImageSummary(s, sum)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.Bundle, "bundle", "", "bundle folder (from kpaas bake) with an OS image")
	f.StringVarP(&opts.Out, "out", "o", "", "output path without extension: writes OUT.raw, OUT.qcow2, OUT.iso")
	f.StringSliceVar(&formats, "format", []string{"raw"}, "formats to write: raw, qcow2, iso (comma-separated or repeated)")
	f.StringVar(&opts.Config, "config", "", "cluster configuration file, put on the ESP at /kpaas/cluster.yaml")
	f.StringVar(&keyPath, "key", "", "ed25519 public key (PEM) that must have signed the bundle")
	f.StringVar(&size, "disk-size", "", "raw/qcow2 disk size, e.g. 20G (default: just large enough; KPAAS-STATE grows into the rest)")
	f.BoolVar(&opts.KeepOSLayers, "keep-os-layers", false, "store the OS image's layers and the node files put into the root in KPAAS-BUNDLE too")
	f.StringVar(&opts.Cmdline, "cmdline", "", "kernel arguments appended to the OS image's command line")
	f.StringVar(&opts.Install, "install", "", "make the ISO an unattended installer onto this disk (auto: the only empty disk, or e.g. /dev/sda)")
	f.BoolVar(&asJSON, "json", false, "print the summary as JSON on stdout")
	f.BoolVarP(&quiet, "quiet", "q", false, "print only errors and the summary")
	return cmd
}

func printImageSummary(s *streams, sum *image.Summary) {
	fmt.Fprintf(s.out, "os %s (%s), kernel %s\n", sum.OS, sum.OSDigest, sum.KernelRelease)
	fmt.Fprintf(s.out, "root squashfs: %s (%d files, %s unpacked)\n", progress.Bytes(sum.Root.Size), sum.Root.Files, progress.Bytes(sum.Root.InputBytes))
	if len(sum.NodeFiles) > 0 {
		fmt.Fprintf(s.out, "node files in the root: %d\n", len(sum.NodeFiles))
		for _, f := range sum.NodeFiles {
			fmt.Fprintf(s.out, "  %s %-40s %10s  %s\n", f.Mode, f.Target, progress.Bytes(f.Size), strings.TrimSpace(f.Name+" "+f.Version))
		}
	}
	if len(sum.NoTargetFiles) > 0 {
		fmt.Fprintf(s.out, "not in the root (no target), only in the bundle: %s\n", strings.Join(sum.NoTargetFiles, ", "))
	}
	if len(sum.BundleOmitted) > 0 {
		omitted := map[string]bool{}
		for _, h := range sum.BundleOmitted {
			omitted[h] = true
		}
		files := 0
		for _, f := range sum.NodeFiles {
			if omitted[f.Digest] {
				omitted[f.Digest], files = false, files+1 // a blob at two targets counts once
			}
		}
		fmt.Fprintf(s.out, "bundle: %d OS layer and %d node file blobs (%s) left out of KPAAS-BUNDLE; the root squashfs holds them\n",
			len(sum.BundleOmitted)-files, files, progress.Bytes(sum.OmittedBytes))
	}
	for _, o := range sum.Outputs {
		fmt.Fprintf(s.out, "%s: %s, %s on disk, %s; boots under %s\n", o.Path, progress.Bytes(o.Size), progress.Bytes(o.Allocated),
			o.Duration.Round(time.Millisecond), firmware(o.Firmware))
		for _, p := range o.Partitions {
			fs := p.Filesystem
			if fs == "" {
				fs = "blank"
			}
			fmt.Fprintf(s.out, "  %d %-13s %-8s %10s  used %s\n", p.Index, p.Name, fs, progress.Bytes(p.Size), progress.Bytes(p.Used))
		}
		if in := o.Install; in != nil {
			fmt.Fprintf(s.out, "  install: writes %s onto a disk of at least %s (disk %s, %d extents)\n",
				progress.Bytes(in.Bytes), progress.Bytes(in.DiskSize), in.DiskGUID, in.Extents)
		}
	}
	fmt.Fprintf(s.out, "done in %s\n", sum.Duration.Round(time.Millisecond))
}

// firmware names the firmware an output boots under: "legacy BIOS and UEFI".
func firmware(fw []disk.Firmware) string {
	names := map[disk.Firmware]string{disk.BIOS: "legacy BIOS", disk.UEFI: "UEFI"}
	var out []string
	for _, f := range fw {
		out = append(out, names[f])
	}
	if len(out) == 0 {
		return "?"
	}
	return strings.Join(out, " and ")
}
