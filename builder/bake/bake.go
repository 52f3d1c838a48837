// Package bake turns a bundle manifest into a bundle: it resolves every
// chart, image and file the manifest names (and every image the charts
// need), copies their content into one content-addressed OCI layout, and
// writes the lock, SBOM, checksum list and signature beside it.
//
// Bake is idempotent: re-running it on an unchanged manifest writes
// nothing, an interrupted bake resumes where it stopped, and the same
// inputs give byte-identical output.
package bake

import (
	"context"
	"crypto/ed25519"
	"time"

	"kpaas.dev/appliance/api/bundle/v1alpha1"
	"kpaas.dev/appliance/builder/source"
	"kpaas.dev/appliance/internal/bundle"
	"kpaas.dev/appliance/internal/progress"
	"kpaas.dev/appliance/internal/steps"
)

// Options configure one bake.
type Options struct {
	// Manifest is the path of the bundle manifest.
	Manifest string
	// Out is the bundle folder (created if missing).
	Out string
	// Mirrors are offline mirror folders consulted first, in order.
	Mirrors []string
	// Offline forbids the network: everything must come from the mirror or
	// local paths.
	Offline bool
	// Registry is the online image source (rewrites, credentials).
	Registry source.Registry
	// SignKey signs the bundle when set.
	SignKey ed25519.PrivateKey
	// Jobs is how many blobs are copied at once (default 4).
	Jobs int
	// Epoch is the timestamp recorded in generated content (charts packaged
	// from folders, the SBOM), used as given: the zero time.Time is
	// recorded as such. `kpaas bake` sets it from SOURCE_DATE_EPOCH, else
	// the Unix epoch; the library does not read the environment.
	Epoch time.Time
	// Progress reports steps and transfers (default: discard).
	Progress *progress.Reporter
}

// Summary is what a bake did.
type Summary struct {
	Bundle       string       `json:"bundle"`
	Images       int          `json:"images"`
	Charts       int          `json:"charts"`
	Files        int          `json:"files"`
	ChartImages  int          `json:"chartImages"` // images added because a chart needs them
	Blobs        int64        `json:"blobs"`
	UniqueBytes  int64        `json:"uniqueBytes"`
	LogicalBytes int64        `json:"logicalBytes"`
	DedupSaved   int64        `json:"dedupSavedBytes"`
	Written      bundle.Stats `json:"written"`
	Signed       bool         `json:"signed"`
	// SignatureRemoved: the bake was unsigned and removed the signature an
	// earlier bake had left (it no longer matched SHA256SUMS).
	SignatureRemoved bool          `json:"signatureRemoved,omitempty"`
	Duration         time.Duration `json:"durationNs"`
}

// state is what the steps share. Each step reads what earlier steps set.
type state struct {
	opts     Options
	manifest *v1alpha1.Bundle
	digest   string // sha256 of the manifest file
	images   source.ImageSource
	fetch    *source.Fetcher
	store    *bundle.Store
	writer   *bundle.Writer
	bar      *progress.Bar

	charts   []*chartArtifact
	platform []*releaseArtifact
	resolved []*imageArtifact
	entries  []entry
	lock     *bundle.Lock
	summary  Summary
}

// bakeSteps is the whole bake, in order, each step reading what earlier ones
// set in st.
func bakeSteps(st *state) []steps.Step {
	step := func(name string, run func(context.Context, *state) error) steps.Step {
		return steps.Step{Name: name, Run: func(ctx context.Context) error { return run(ctx, st) }}
	}
	return []steps.Step{
		step("manifest", loadManifest),  // parse and validate the manifest
		step("charts", fetchCharts),     // fetch every chart, render it, list its images
		step("platform", loadPlatform),  // read the platform's manifests, list their images
		step("resolve", resolveImages),  // pin every image (manifest ∪ charts − excluded) to a digest
		step("images", writeImages),     // copy image blobs into the layout
		step("files", writeFiles),       // copy host files, verified against sha256
		step("index", writeIndex),       // index.json and kpaas-lock.json
		step("metadata", writeMetadata), // SBOM, SHA256SUMS, signature; sync to disk
	}
}

// Bake runs every step of a bake. A failed step's error is a
// *steps.StepError naming the step and wrapping the cause.
func Bake(ctx context.Context, opts Options) (*Summary, error) {
	if opts.Progress == nil {
		opts.Progress = progress.Discard()
	}
	start := time.Now()
	st := &state{opts: opts}
	r := &steps.Runner{Progress: opts.Progress}
	if err := r.Run(ctx, bakeSteps(st)); err != nil {
		return nil, err
	}
	st.summary.Bundle = opts.Out
	st.summary.Duration = time.Since(start)
	return &st.summary, nil
}
