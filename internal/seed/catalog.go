package seed

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"kpaas.dev/appliance/internal/bundle"
	"kpaas.dev/appliance/internal/ref"
)

// repository is what the seed serves under one name: the artifacts whose
// original reference names it, and everything below them.
type repository struct {
	name      string                   // docker.io/library/nginx
	tags      map[string]v1.Descriptor // tag → top-level descriptor
	tagList   []string                 // sorted tags
	manifests map[v1.Hash]v1.Descriptor
	blobs     map[v1.Hash]blob
	referrers map[v1.Hash][]v1.Descriptor // subject → referring manifests
	walked    map[v1.Hash]bool            // manifests already read by buildCatalog
}

// blob is a blob that the repository may serve.
type blob struct {
	size     int64
	artifact string // the reference of the artifact it was reached from
}

// catalog is the seed's view of a bundle, built once by New.
type catalog struct {
	repos     map[string]*repository
	names     []string // sorted repository names
	artifacts int      // entries served
}

func (c *catalog) repo(name string) *repository {
	r, ok := c.repos[name]
	if !ok {
		r = &repository{
			name:      name,
			tags:      map[string]v1.Descriptor{},
			manifests: map[v1.Hash]v1.Descriptor{},
			blobs:     map[v1.Hash]blob{},
			referrers: map[v1.Hash][]v1.Descriptor{},
			walked:    map[v1.Hash]bool{},
		}
		c.repos[name] = r
	}
	return r
}

// buildCatalog reads the bundle's index and walks every artifact. An
// artifact that cannot be walked completely is logged and served as far as
// it could be read: one damaged image must not take the others down. Its
// damaged manifest answers 500 when asked for.
func buildCatalog(s *bundle.Store, log *slog.Logger) (*catalog, error) {
	entries, err := s.Entries()
	if err != nil {
		return nil, err
	}
	c := &catalog{repos: map[string]*repository{}}
	for _, e := range entries {
		if e.Ref == "" {
			log.Warn("artifact has no reference, not served", "digest", e.Descriptor.Digest.String())
			continue
		}
		r, err := ref.Parse(e.Ref)
		if err != nil {
			log.Warn("artifact reference is invalid, not served", "ref", e.Ref, "err", err)
			continue
		}
		c.artifacts++
		repo := c.repo(r.Name())
		top := plain(e.Descriptor)
		if r.Tag != "" {
			repo.tags[r.Tag] = top
		}
		repo.manifests[top.Digest] = top
		// A pull by the upstream digest of an index the bundle filtered is
		// answered with the stored index (see docs/seed.md).
		for _, alias := range []string{r.Digest, e.Descriptor.Annotations[bundle.AnnotationSourceDigest]} {
			if h, err := v1.NewHash(alias); err == nil && h != top.Digest {
				if _, taken := repo.manifests[h]; !taken {
					repo.manifests[h] = top
				}
			}
		}
		if err := repo.add(s, e.Ref, top); err != nil {
			log.Error("artifact is damaged, serving what could be read", "artifact", e.Ref, "err", err)
		}
	}
	for name, repo := range c.repos {
		repo.walked = nil
		c.names = append(c.names, name)
		for t := range repo.tags {
			repo.tagList = append(repo.tagList, t)
		}
		sort.Strings(repo.tagList)
	}
	sort.Strings(c.names)
	return c, nil
}

// add records the artifact top and everything below it: child manifests,
// configs, layers, and the referrers among its manifests. Each manifest is
// read (and verified) once per repository, however many artifacts share it.
//
// A child manifest that is not in the bundle is skipped: the bundle may
// store an upstream index unchanged with only the platforms it selected
// (a sparse index), so that pulls by the upstream digest verify.
func (repo *repository) add(s *bundle.Store, artifact string, top v1.Descriptor) error {
	return repo.walk(s, artifact, top, true)
}

func (repo *repository) walk(s *bundle.Store, artifact string, d v1.Descriptor, top bool) error {
	if !top {
		if !s.HasBlob(d.Digest, d.Size) {
			return nil // not in the bundle: a platform the bundle left out
		}
		if _, seen := repo.manifests[d.Digest]; !seen {
			repo.manifests[d.Digest] = plain(d)
		}
	}
	if repo.walked[d.Digest] {
		return nil
	}
	repo.walked[d.Digest] = true
	repo.addBlob(d, artifact)
	b, err := s.ReadManifest(d)
	if err != nil {
		return err
	}
	var m manifestFields
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("parsing manifest %s: %w", d.Digest, err)
	}
	repo.addReferrer(d, &m)
	if m.Config != nil {
		repo.addBlob(*m.Config, artifact)
	}
	for _, l := range m.Layers {
		repo.addBlob(l, artifact)
	}
	var errs []error
	for _, c := range m.Manifests {
		if err := repo.walk(s, artifact, c, false); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (repo *repository) addBlob(d v1.Descriptor, artifact string) {
	if _, seen := repo.blobs[d.Digest]; !seen {
		repo.blobs[d.Digest] = blob{size: d.Size, artifact: artifact}
	}
}

// manifestFields are the parts of a manifest or index the seed uses: what
// is below it, and what the referrers API reports.
type manifestFields struct {
	ArtifactType string            `json:"artifactType,omitempty"`
	Config       *v1.Descriptor    `json:"config,omitempty"`
	Layers       []v1.Descriptor   `json:"layers,omitempty"`
	Manifests    []v1.Descriptor   `json:"manifests,omitempty"`
	Subject      *v1.Descriptor    `json:"subject,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
}

// addReferrer records d as a referrer of its subject, if it has one.
func (repo *repository) addReferrer(d v1.Descriptor, m *manifestFields) {
	if m.Subject == nil {
		return
	}
	for _, have := range repo.referrers[m.Subject.Digest] {
		if have.Digest == d.Digest {
			return
		}
	}
	// The spec: artifactType, else the config's media type for an image
	// manifest.
	at := m.ArtifactType
	if at == "" && m.Config != nil {
		at = string(m.Config.MediaType)
	}
	repo.referrers[m.Subject.Digest] = append(repo.referrers[m.Subject.Digest], v1.Descriptor{
		MediaType:    d.MediaType,
		Digest:       d.Digest,
		Size:         d.Size,
		ArtifactType: at,
		Annotations:  m.Annotations,
	})
}

// plain keeps what a registry needs of a descriptor: media type, digest,
// size. Manifests with an unknown media type are served as OCI manifests.
func plain(d v1.Descriptor) v1.Descriptor {
	mt := d.MediaType
	if mt == "" {
		mt = types.OCIManifestSchema1
	}
	return v1.Descriptor{MediaType: mt, Digest: d.Digest, Size: d.Size}
}
