package cli

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"kpaas.dev/appliance/builder/bake"
	"kpaas.dev/appliance/builder/source"
	"kpaas.dev/appliance/internal/bundle"
	"kpaas.dev/appliance/internal/progress"
)

func newBakeCmd(s *streams) *cobra.Command {
	var (
		out, signKey       string
		mirrors            []string
		offline, asJSON    bool
		quiet              bool
		jobs               int
		rewrites, insecure []string
	)
	cmd := &cobra.Command{
		Use:   "bake MANIFEST -o DIR",
		Short: "Bake a bundle: resolve, fetch and verify everything a manifest names into one OCI layout",
		Long: `Bake resolves every image, chart and file of a bundle manifest (and every image
the charts need) to a digest, copies the content into DIR (an OCI image layout,
each blob stored once), and writes kpaas-lock.json, sbom.spdx.json, SHA256SUMS
and, with --sign-key, SHA256SUMS.sig beside it.

Re-running bake on an unchanged manifest writes nothing; an interrupted bake
resumes. SOURCE_DATE_EPOCH sets the time recorded in generated content.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return fmt.Errorf("--out is required")
			}
			opts := bake.Options{
				Manifest: args[0],
				Out:      out,
				Mirrors:  mirrors,
				Offline:  offline,
				Jobs:     jobs,
				Registry: source.Registry{Rewrite: map[string]string{}, Insecure: map[string]bool{}},
			}
			for _, r := range rewrites {
				up, host, ok := strings.Cut(r, "=")
				if !ok || up == "" || host == "" {
					return fmt.Errorf("--registry-rewrite %q: want UPSTREAM=HOST[:PORT]", r)
				}
				opts.Registry.Rewrite[up] = host
			}
			for _, h := range insecure {
				opts.Registry.Insecure[h] = true
			}
			epoch, ok, err := sourceDateEpoch()
			if err != nil {
				return err
			}
			if !ok {
				epoch = time.Unix(0, 0).UTC()
			}
			opts.Epoch = epoch
			if signKey != "" {
				if opts.SignKey, err = bundle.LoadPrivateKey(signKey); err != nil {
					return err
				}
			}
			logTo := s.err
			opts.Progress = progress.New(logTo, progress.Quiet(quiet))
			sum, err := bake.Bake(cmd.Context(), opts)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(s.out, sum)
			}
			printSummary(s, sum)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&out, "out", "o", "", "bundle folder to write (created if missing)")
	f.StringArrayVar(&mirrors, "mirror", nil, "local mirror folder consulted before the network (repeatable; see docs/mirror.md)")
	f.BoolVar(&offline, "offline", false, "never use the network: everything must come from --mirror or local paths")
	f.StringVar(&signKey, "sign-key", "", "ed25519 private key (from 'kpaas key generate') to sign the bundle with")
	f.IntVar(&jobs, "jobs", 4, "blobs copied at once")
	f.StringArrayVar(&rewrites, "registry-rewrite", nil, "fetch UPSTREAM's images from HOST instead (UPSTREAM=HOST[:PORT]); the bundle keeps upstream names")
	f.StringArrayVar(&insecure, "insecure-registry", nil, "allow plain HTTP to this registry host")
	f.BoolVar(&asJSON, "json", false, "print the summary as JSON on stdout")
	f.BoolVarP(&quiet, "quiet", "q", false, "print only errors and the summary")
	return cmd
}

func printSummary(s *streams, sum *bake.Summary) {
	signed := "unsigned"
	if sum.Signed {
		signed = "signed"
	} else if sum.SignatureRemoved {
		signed = "unsigned (the old signature was removed)"
	}
	fmt.Fprintf(s.out, "bundle %s: %d images (%d added for charts), %d charts, %d files; %d blobs, %s unique of %s (%s saved by dedup); wrote %d blobs (%s), skipped %d; %s; %s\n",
		sum.Bundle, sum.Images, sum.ChartImages, sum.Charts, sum.Files, sum.Blobs,
		progress.Bytes(sum.UniqueBytes), progress.Bytes(sum.LogicalBytes), progress.Bytes(sum.DedupSaved),
		sum.Written.BlobsWritten, progress.Bytes(sum.Written.BytesWritten), sum.Written.BlobsSkipped,
		signed, sum.Duration.Round(time.Millisecond))
}
