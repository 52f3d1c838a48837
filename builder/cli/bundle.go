package cli

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"kpaas.dev/appliance/internal/bundle"
	"kpaas.dev/appliance/internal/progress"
)

func newBundleCmd(s *streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bundle",
		Short: "Work with bundle manifests and baked bundles: lint, verify, inspect, export, import",
	}
	cmd.AddCommand(
		newBundleLintCmd(s),
		newBundleVerifyCmd(s),
		newBundleInspectCmd(s),
		newBundleExportCmd(s),
		newBundleImportCmd(s),
	)
	return cmd
}

func newBundleVerifyCmd(s *streams) *cobra.Command {
	var keyPath string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "verify DIR",
		Short: "Check every blob, the checksum list, the lock and the signature of a bundle",
		Long: `Verify reads every blob that index.json reaches and checks its size and sha256,
checks SHA256SUMS against the metadata files and the blobs, checks that
kpaas-lock.json agrees with index.json, and, with --key, checks the signature.

Every problem is listed with the artifacts and the blob concerned. Verify exits
non-zero when it finds any problem. Without --key, a signature is reported as
present but not checked.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := bundle.Open(args[0])
			if err != nil {
				return err
			}
			opts := bundle.VerifyOptions{}
			if keyPath != "" {
				if opts.PublicKey, err = bundle.LoadPublicKey(keyPath); err != nil {
					return err
				}
			}
			rep := progress.New(s.err, progress.Quiet(asJSON))
			var bar *progress.Bar
			var shown int64
			opts.Progress = func(p bundle.VerifyProgress) {
				if bar == nil {
					bar = rep.Bar("verifying "+args[0], p.Bytes)
				}
				bar.Add(p.BytesDone - shown)
				shown = p.BytesDone
			}
			start := time.Now()
			r, verr := st.Verify(cmd.Context(), opts)
			bar.Finish()
			if r == nil {
				return verr
			}
			if asJSON {
				if err := writeJSON(s.out, r); err != nil {
					return err
				}
			} else {
				printVerify(s, args[0], r, time.Since(start))
			}
			if !r.OK() {
				return fmt.Errorf("bundle %s: %d problem(s)", args[0], len(r.Problems))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&keyPath, "key", "", "ed25519 public key (PEM) that must have signed the bundle")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

func printVerify(s *streams, dir string, r *bundle.Report, d time.Duration) {
	state := "ok"
	if !r.OK() {
		state = fmt.Sprintf("%d problem(s)", len(r.Problems))
	}
	fmt.Fprintf(s.out, "bundle %s: %s: %d artifacts, %d blobs (%s) checked in %s\n",
		dir, state, r.Artifacts, r.Blobs, progress.Bytes(r.Bytes), d.Round(time.Millisecond))
	sig := "signature: " + r.Signature
	if r.KeyFingerprint != "" {
		sig += " (key " + r.KeyFingerprint + ")"
	}
	fmt.Fprintln(s.out, sig)
	if r.Unreferenced > 0 {
		fmt.Fprintf(s.out, "note: %d unreferenced blob(s) not in index.json (not exported)\n", r.Unreferenced)
	}
	if r.TempFiles > 0 {
		fmt.Fprintf(s.out, "note: %d temp file(s) (%s) left by an interrupted write (not exported; the next bake removes them)\n", r.TempFiles, progress.Bytes(r.TempBytes))
	}
	for _, p := range r.Problems {
		fmt.Fprintln(s.out, "problem:", p.String())
	}
}

func newBundleInspectCmd(s *streams) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "inspect DIR",
		Short: "List a bundle's artifacts, sizes and what deduplication saves",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := bundle.Open(args[0])
			if err != nil {
				return err
			}
			in, err := st.Inspect()
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(s.out, in)
			}
			printInspect(s, in)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the inspection as JSON")
	return cmd
}

func printInspect(s *streams, in *bundle.Inspection) {
	tw := tabwriter.NewWriter(s.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tREF\tDIGEST\tPLATFORMS\tBLOBS\tSIZE")
	for _, a := range in.Artifacts {
		platforms := strings.Join(a.Platforms, ",")
		if platforms == "" {
			platforms = "-"
		}
		digest := a.Digest
		if len(digest) > 19 {
			digest = digest[:19]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", a.Kind, a.Ref, digest, platforms, a.Blobs, progress.Bytes(a.Size))
	}
	tw.Flush()
	t := in.Totals
	pct := 0.0
	if t.LogicalBytes > 0 {
		pct = float64(t.SavedBytes) * 100 / float64(t.LogicalBytes)
	}
	fmt.Fprintf(s.out, "\n%d artifacts, %d distinct blobs\n", t.Artifacts, t.Blobs)
	fmt.Fprintf(s.out, "logical size   %s\n", progress.Bytes(t.LogicalBytes))
	fmt.Fprintf(s.out, "unique size    %s\n", progress.Bytes(t.UniqueBytes))
	fmt.Fprintf(s.out, "saved by dedup %s (%.1f%%)\n", progress.Bytes(t.SavedBytes), pct)
	fmt.Fprintf(s.out, "on disk        %s", progress.Bytes(t.DiskBytes))
	if t.UnreferencedBlobs > 0 {
		fmt.Fprintf(s.out, " (including %d unreferenced blob(s), %s)", t.UnreferencedBlobs, progress.Bytes(t.UnreferencedBytes))
	}
	if t.TempFiles > 0 {
		fmt.Fprintf(s.out, "; besides, %d temp file(s) (%s) left by an interrupted write: the next bake removes them", t.TempFiles, progress.Bytes(t.TempBytes))
	}
	fmt.Fprintln(s.out)
}

// fat32Max is the largest file a FAT32 file system holds.
const fat32Max = 1<<32 - 1

// minSplit is the smallest --split part size: smaller parts only make
// thousands of files.
const minSplit = 1 << 20

// roundUpMiB writes n bytes rounded up to whole MiB as a --split value.
func roundUpMiB(n int64) string {
	return strconv.FormatInt((n+minSplit-1)/minSplit, 10) + "MiB"
}

func newBundleExportCmd(s *streams) *cobra.Command {
	var out, split string
	cmd := &cobra.Command{
		Use:   "export DIR -o FILE.tar [--split SIZE]",
		Short: "Write a bundle as one tar, or as parts of a given size with a checksum list",
		Long: `Export writes the bundle as an uncompressed tar (its blobs are compressed
already). The same bundle always gives the same bytes.

With --split SIZE it writes FILE.tar.000, FILE.tar.001, … of SIZE bytes each and
FILE.tar.sha256sums (check with 'sha256sum -c', join with 'cat FILE.tar.??? >
FILE.tar'). SIZE takes K, M, G, T suffixes as coreutils' split does: 4G and 4GiB
are 4×1024³ bytes, 4GB is 4×1000³; fractions like 1.5GiB are fine. FAT32 media
hold files up to 4 GiB minus one byte: use --split 4GB (or 4000M) there.
Parts are at least 1 MiB, and there are at most 1000 (.000 to .999); the
folder of FILE.tar must exist.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return fmt.Errorf("--out is required")
			}
			st, err := bundle.Open(args[0])
			if err != nil {
				return err
			}
			start := time.Now()
			if split == "" {
				if err := st.ExportFile(cmd.Context(), out); err != nil {
					return err
				}
				fi, err := os.Stat(out)
				if err != nil {
					return err
				}
				fmt.Fprintf(s.out, "wrote %s (%s) in %s\n", out, progress.Bytes(fi.Size()), time.Since(start).Round(time.Millisecond))
				return nil
			}
			size, err := parseSize(split)
			if err != nil {
				return fmt.Errorf("--split: %w", err)
			}
			if size < minSplit {
				return fmt.Errorf("--split %s: parts must be at least %s", split, progress.Bytes(minSplit))
			}
			if size > fat32Max {
				fmt.Fprintf(s.err, "note: parts of %s do not fit on FAT32 media (at most 4 GiB - 1 byte)\n", progress.Bytes(size))
			}
			parts, err := st.ExportSplit(cmd.Context(), filepath.Dir(out), filepath.Base(out), size,
				bundle.WithPartDone(func(p bundle.Part) {
					fmt.Fprintf(s.out, "part %s: %s, sha256 %s\n", p.Path, progress.Bytes(p.Size), p.SHA256)
				}))
			var tm *bundle.TooManyPartsError
			if errors.As(err, &tm) {
				return fmt.Errorf("--split %s: the export (%s) would need %d parts, more than %d (.000 to .999): use --split %s or more",
					split, progress.Bytes(tm.Total), tm.Parts, bundle.MaxParts, roundUpMiB(tm.MinPartSize))
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(s.out, "wrote %d parts and %s in %s\n", len(parts), out+bundle.SumsSuffix, time.Since(start).Round(time.Millisecond))
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "out", "o", "", "tar file to write (with --split: the parts' base name)")
	cmd.Flags().StringVar(&split, "split", "", "write parts of this size (e.g. 4GB, 700M, 1.5GiB)")
	return cmd
}

func newBundleImportCmd(s *streams) *cobra.Command {
	var out, keyPath string
	cmd := &cobra.Command{
		Use:   "import FILE -o DIR",
		Short: "Recreate a bundle folder from an export (a tar, a .000 part or the .sha256sums list)",
		Long: `Import checks each part against its checksum as it reads it, extracts into a
temporary folder beside DIR, verifies the whole bundle, and only then renames it
to DIR. On any failure nothing is left. DIR must not exist or be empty.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return fmt.Errorf("--out is required")
			}
			var vopts bundle.VerifyOptions
			if keyPath != "" {
				pub, err := bundle.LoadPublicKey(keyPath)
				if err != nil {
					return err
				}
				vopts.PublicKey = pub
			}
			start := time.Now()
			r, err := bundle.Import(cmd.Context(), args[0], out,
				bundle.WithVerifyOptions(vopts),
				bundle.WithPartDone(func(p bundle.Part) {
					fmt.Fprintf(s.out, "part %s: %s, sha256 %s: ok\n", p.Path, progress.Bytes(p.Size), p.SHA256)
				}))
			if r != nil {
				printVerify(s, out, r, time.Since(start))
			}
			return err
		},
	}
	cmd.Flags().StringVarP(&out, "out", "o", "", "bundle folder to create")
	cmd.Flags().StringVar(&keyPath, "key", "", "ed25519 public key (PEM) that must have signed the bundle")
	return cmd
}

var sizeRE = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)\s*(?:([KMGTkmgt])(i?)([Bb]?))?$`)

// parseSize reads a size the way coreutils' split does: a bare number is
// bytes; K, M, G, T (and KiB, MiB, …) are powers of 1024; KB, MB, GB, TB
// are powers of 1000. Fractions are allowed (1.5GiB).
func parseSize(v string) (int64, error) {
	m := sizeRE.FindStringSubmatch(strings.TrimSpace(v))
	if m == nil {
		return 0, fmt.Errorf("size %q: want a number with an optional K, M, G or T suffix (KiB, KB, …)", v)
	}
	n, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: %w", v, err)
	}
	mult := 1.0
	if m[2] != "" {
		base := 1024.0
		if m[3] == "" && m[4] != "" {
			base = 1000
		}
		exp := strings.Index("KMGT", strings.ToUpper(m[2])) + 1
		mult = math.Pow(base, float64(exp))
	}
	size := n * mult
	if size < 1 || size > math.MaxInt64/2 {
		return 0, fmt.Errorf("size %q out of range", v)
	}
	return int64(size), nil
}
