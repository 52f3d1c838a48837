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
	// from folders, the SBOM): SOURCE_DATE_EPOCH, default 0.
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

type step struct {
	name string
	run  func(context.Context, *state) error
}

// steps is the whole bake, in order.
func steps() []step {
	return []step{
		{"manifest", loadManifest},  // parse and validate the manifest
		{"charts", fetchCharts},     // fetch every chart, render it, list its images
		{"platform", loadPlatform},  // read the platform's manifests, list their images
		{"resolve", resolveImages},  // pin every image (manifest ∪ charts − excluded) to a digest
		{"images", writeImages},     // copy image blobs into the layout
		{"files", writeFiles},       // copy host files, verified against sha256
		{"index", writeIndex},       // index.json and kpaas-lock.json
		{"metadata", writeMetadata}, // SBOM, SHA256SUMS, signature; sync to disk
	}
}

// Bake runs every step of a bake.
func Bake(ctx context.Context, opts Options) (*Summary, error) {
	if opts.Progress == nil {
		opts.Progress = progress.Discard()
	}
	start := time.Now()
	st := &state{opts: opts}
	all := steps()
	for i, s := range all {
		err := opts.Progress.Step(s.name, i+1, len(all), func() error { return s.run(ctx, st) })
		if err != nil {
			return nil, err
		}
	}
	st.summary.Bundle = opts.Out
	st.summary.Duration = time.Since(start)
	return &st.summary, nil
}
