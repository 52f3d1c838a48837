package cli

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"kpaas.dev/appliance/api/bundle/v1alpha1"
)

// lintResult is one manifest's line in `kpaas bundle lint --json`.
type lintResult struct {
	File     string             `json:"file"`
	OK       bool               `json:"ok"`
	Problems []v1alpha1.Problem `json:"problems"`
	summary  string             // "ok (…)" for the text output
}

func newBundleLintCmd(s *streams) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "lint FILE...",
		Short: "Check bundle manifests without fetching anything",
		Long: `Lint parses each bundle manifest strictly and checks every rule of the schema
(see docs/manifest.md). It reads only the manifests: nothing is fetched, so
images, charts and files are not checked to exist.

Each problem is printed as FILE:LINE:COLUMN: PATH: MESSAGE. Lint exits non-zero
when any manifest has a problem.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, files []string) error {
			return lintFiles(s, files, asJSON, lint, "manifests")
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the results as a JSON array")
	return cmd
}

// lintFiles lints each file with one, prints each result (or them all as a
// JSON array) and fails when any file has a problem; what names the kind
// of file in that error.
func lintFiles(s *streams, files []string, asJSON bool, one func(string) lintResult, what string) error {
	results := make([]lintResult, 0, len(files))
	failed := 0
	for _, file := range files {
		r := one(file)
		if !r.OK {
			failed++
		}
		results = append(results, r)
		if !asJSON {
			printLint(s, r)
		}
	}
	if asJSON {
		if err := writeJSON(s.out, results); err != nil {
			return err
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d %s have problems", failed, len(files), what)
	}
	return nil
}

// lint loads one manifest. A failure that is not a list of problems (an
// unreadable file, say) becomes a single problem without position.
func lint(file string) lintResult {
	r := lintResult{File: file, Problems: []v1alpha1.Problem{}}
	b, err := v1alpha1.Load(file)
	var verr *v1alpha1.ValidationError
	switch {
	case err == nil:
		r.OK = true
		r.summary = fmt.Sprintf("ok (%d images, %d charts, %d files)", len(b.Images), len(b.Charts), len(b.Files))
	case errors.As(err, &verr):
		r.Problems = verr.Problems
	default:
		r.Problems = []v1alpha1.Problem{{Message: err.Error()}}
	}
	return r
}

func printLint(s *streams, r lintResult) {
	if r.OK {
		fmt.Fprintf(s.out, "%s: %s\n", r.File, r.summary)
		return
	}
	fmt.Fprintln(s.out, (&v1alpha1.ValidationError{File: r.File, Problems: r.Problems}).Error())
}
