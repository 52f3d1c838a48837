package bundle

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"path/filepath"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"kpaas.dev/appliance/internal/atomicfile"
)

// Inspection describes a bundle's content and what deduplication saves.
type Inspection struct {
	Artifacts []ArtifactInfo `json:"artifacts"`
	Totals    Totals         `json:"totals"`
}

// ArtifactInfo is one artifact of index.json.
type ArtifactInfo struct {
	Kind      Kind     `json:"kind"`
	Ref       string   `json:"ref"`
	Digest    string   `json:"digest"`
	MediaType string   `json:"mediaType"`
	Platforms []string `json:"platforms,omitempty"`
	// Blobs counts the artifact's distinct blobs (manifests, configs,
	// layers), Size adds up their sizes (the lock's size).
	Blobs int   `json:"blobs"`
	Size  int64 `json:"size"`
}

// Totals sums up a bundle.
type Totals struct {
	Artifacts int `json:"artifacts"`
	// LogicalBytes is the sum of the artifacts' sizes: what separate
	// copies of each artifact would take.
	LogicalBytes int64 `json:"logicalBytes"`
	// UniqueBytes is the size of the distinct blobs index.json reaches:
	// what the bundle stores.
	UniqueBytes int64 `json:"uniqueBytes"`
	// SavedBytes is LogicalBytes - UniqueBytes, saved by sharing blobs.
	SavedBytes int64 `json:"savedBytes"`
	// Blobs is the number of distinct reachable blobs.
	Blobs int `json:"blobs"`
	// DiskBytes adds up the sizes of every file in the bundle folder
	// (metadata, reachable and unreferenced blobs), not the temp files of
	// interrupted writes.
	DiskBytes int64 `json:"diskBytes"`
	// UnreferencedBlobs and UnreferencedBytes are blob files that
	// index.json does not reach (left by an earlier bake).
	UnreferencedBlobs int   `json:"unreferencedBlobs"`
	UnreferencedBytes int64 `json:"unreferencedBytes"`
	// TempFiles and TempBytes are temp files an interrupted write left
	// (not part of DiskBytes; the next bake removes them).
	TempFiles int   `json:"tempFiles"`
	TempBytes int64 `json:"tempBytes"`
}

// Inspect lists the bundle's artifacts and totals. It reads index.json,
// the manifests (verified) and the configs of single-platform images, and
// trusts the sizes in descriptors; Verify checks content.
func (s *Store) Inspect() (*Inspection, error) {
	g := s.graph(context.Background())
	if err := g.firstError(); err != nil {
		return nil, err
	}
	in := &Inspection{Artifacts: []ArtifactInfo{}}
	for i, e := range g.entries {
		a := ArtifactInfo{
			Kind:      e.Kind,
			Ref:       e.Ref,
			Digest:    e.Descriptor.Digest.String(),
			MediaType: string(e.Descriptor.MediaType),
			Blobs:     len(g.artifacts[i]),
			Size:      g.artifactSize(i),
			Platforms: s.platforms(g, e.Descriptor),
		}
		in.Artifacts = append(in.Artifacts, a)
		in.Totals.LogicalBytes += a.Size
	}
	in.Totals.Artifacts = len(in.Artifacts)
	in.Totals.Blobs = len(g.order)
	for _, h := range g.order {
		in.Totals.UniqueBytes += g.blobs[h].size
	}
	in.Totals.SavedBytes = in.Totals.LogicalBytes - in.Totals.UniqueBytes
	err := filepath.WalkDir(s.root, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !de.Type().IsRegular() {
			return nil
		}
		fi, err := de.Info()
		if err != nil {
			return err
		}
		if strings.HasPrefix(de.Name(), atomicfile.TempPrefix) {
			in.Totals.TempFiles++
			in.Totals.TempBytes += fi.Size()
			return nil
		}
		in.Totals.DiskBytes += fi.Size()
		if filepath.Dir(p) == filepath.Join(s.root, BlobsDir, "sha256") {
			h := v1.Hash{Algorithm: "sha256", Hex: de.Name()}
			if _, ok := g.blobs[h]; !ok && checkHash(h) == nil {
				in.Totals.UnreferencedBlobs++
				in.Totals.UnreferencedBytes += fi.Size()
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return in, nil
}

// firstError turns the walk's problems into an error for the callers
// that need a complete, readable graph (sums, inspect, export).
func (g *graph) firstError() error {
	var errs []error
	for _, p := range g.problems {
		errs = append(errs, errors.New(p.String()))
	}
	for _, h := range g.order {
		if b := g.blobs[h]; b.err != nil {
			errs = append(errs, errors.New(Problem{Blob: h.String(), Uses: b.uses, Message: describeBlobError(b.err)}.String()))
		}
	}
	return errors.Join(errs...)
}

// platforms lists the platforms of an artifact: its index's children, or
// the os/architecture of a single image's config.
func (s *Store) platforms(g *graph, d v1.Descriptor) []string {
	var out []string
	switch m := g.manifests[d.Digest].(type) {
	case *v1.IndexManifest:
		for _, c := range m.Manifests {
			if p := platformOf(c); p != "" {
				out = append(out, p)
			}
		}
	case *v1.Manifest:
		if m.Config.MediaType != types.OCIConfigJSON && m.Config.MediaType != types.DockerConfigJSON {
			return nil
		}
		b, err := s.ReadBlob(m.Config.Digest)
		if err != nil {
			return nil
		}
		cf, err := v1.ParseConfigFile(bytes.NewReader(b))
		if err != nil || cf.OS == "" {
			return nil
		}
		p := v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant}
		out = append(out, p.String())
	}
	sort.Strings(out)
	return out
}
