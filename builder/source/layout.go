package source

import (
	"context"
	"fmt"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"kpaas.dev/appliance/internal/ref"
)

// Annotations that name an image in an OCI layout's index.json.
const (
	annotationRefName       = "org.opencontainers.image.ref.name"
	annotationContainerd    = "io.containerd.image.name"
	annotationSourceDigest  = "dev.kpaas.source.digest"
	annotationKindInBundles = "dev.kpaas.artifact.kind"
)

// Layout resolves images from a local OCI image layout folder whose
// index.json names them by full reference (org.opencontainers.image.ref.name
// or io.containerd.image.name). A kpaas bundle is such a layout too.
type Layout struct {
	Dir string

	once    sync.Once
	err     error
	idx     v1.ImageIndex
	byRef   map[string]v1.Descriptor // canonical ref → descriptor
	entries []layoutEntry
}

type layoutEntry struct {
	ref  ref.Ref
	desc v1.Descriptor
}

func (s *Layout) String() string { return "layout:" + s.Dir }

func (s *Layout) load() error {
	s.once.Do(func() {
		p, err := layout.FromPath(s.Dir)
		if err != nil {
			s.err = fmt.Errorf("opening OCI layout %s: %w", s.Dir, err)
			return
		}
		s.idx, err = p.ImageIndex()
		if err != nil {
			s.err = fmt.Errorf("reading OCI layout %s: %w", s.Dir, err)
			return
		}
		im, err := s.idx.IndexManifest()
		if err != nil {
			s.err = fmt.Errorf("reading %s/index.json: %w", s.Dir, err)
			return
		}
		s.byRef = map[string]v1.Descriptor{}
		for _, d := range im.Manifests {
			for _, key := range []string{annotationRefName, annotationContainerd} {
				r, err := ref.Parse(d.Annotations[key])
				if err != nil || d.Annotations[key] == "" {
					continue
				}
				s.byRef[r.String()] = d
				s.entries = append(s.entries, layoutEntry{ref: r, desc: d})
			}
		}
	})
	return s.err
}

// Resolve implements ImageSource. A reference pinned by digest matches an
// entry of the same name with that digest (or, for a bundle used as a
// mirror, that upstream digest), whatever its tag.
func (s *Layout) Resolve(ctx context.Context, r ref.Ref) (*Image, error) {
	if err := s.load(); err != nil {
		return nil, err
	}
	d, ok := s.byRef[r.String()]
	if !ok && r.Digest != "" {
		for _, e := range s.entries {
			if e.ref.Name() == r.Name() && (e.desc.Digest.String() == r.Digest || e.desc.Annotations[annotationSourceDigest] == r.Digest) {
				d, ok = e.desc, true
				break
			}
		}
	}
	if !ok {
		return nil, fmt.Errorf("%s: %s: %w", r, s, ErrNotFound)
	}
	img := &Image{Ref: r, Source: s.String()}
	var err error
	if d.MediaType.IsIndex() {
		img.Index, err = s.idx.ImageIndex(d.Digest)
	} else {
		img.Image, err = s.idx.Image(d.Digest)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: reading %s from %s: %w", r, d.Digest, s, err)
	}
	if r.Digest != "" && d.Annotations[annotationSourceDigest] == r.Digest {
		return img, nil // a filtered index standing for its upstream digest
	}
	return img, checkPinned(r, img)
}

// Archive resolves images from a tarball: a docker archive (`docker
// save`, `podman save`) by the tags listed in its manifest.json, or an OCI
// archive (a tarred OCI image layout, `skopeo copy … oci-archive:`) by its
// index's reference annotations. An OCI archive is unpacked once into the
// user cache folder (keyed by the tarball's path, size and time).
type Archive struct {
	Path string
	// CacheDir holds unpacked OCI archives (default: the user cache dir).
	CacheDir string

	once   sync.Once
	err    error
	byRef  map[string]name.Tag
	layout *Layout
}

func (s *Archive) String() string { return "archive:" + s.Path }

func (s *Archive) opener() tarball.Opener { return fileOpener(s.Path) }

func (s *Archive) load() error {
	s.once.Do(func() {
		if oci, err := isOCIArchive(s.Path); err != nil {
			s.err = err
			return
		} else if oci {
			dir, err := unpackOCIArchive(s.Path, s.CacheDir)
			if err != nil {
				s.err = err
				return
			}
			s.layout = &Layout{Dir: dir}
			return
		}
		m, err := tarball.LoadManifest(s.opener())
		if err != nil {
			s.err = fmt.Errorf("reading docker archive %s: %w", s.Path, err)
			return
		}
		s.byRef = map[string]name.Tag{}
		for _, d := range m {
			for _, t := range d.RepoTags {
				tag, err := name.NewTag(t, name.WeakValidation)
				if err != nil {
					continue
				}
				r, err := ref.Parse(t)
				if err != nil {
					continue
				}
				s.byRef[r.String()] = tag
			}
		}
	})
	return s.err
}

// Resolve implements ImageSource.
func (s *Archive) Resolve(ctx context.Context, r ref.Ref) (*Image, error) {
	if err := s.load(); err != nil {
		return nil, err
	}
	if s.layout != nil {
		img, err := s.layout.Resolve(ctx, r)
		if err != nil {
			return nil, err
		}
		img.Source = s.String()
		return img, nil
	}
	key := r
	key.Digest = ""
	tag, ok := s.byRef[key.String()]
	if !ok || key.Tag == "" {
		return nil, fmt.Errorf("%s: %s: %w", r, s, ErrNotFound)
	}
	img, err := tarball.Image(s.opener(), &tag)
	if err != nil {
		return nil, fmt.Errorf("%s: reading %s: %w", r, s, err)
	}
	out := &Image{Ref: r, Source: s.String(), Image: img}
	return out, checkPinned(r, out)
}
