package bundle

import (
	"bytes"
	"fmt"
	"sort"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Entry is one artifact of the bundle: a top-level descriptor of index.json.
type Entry struct {
	Kind       Kind
	Ref        string // full original reference (AnnotationRefName)
	Descriptor v1.Descriptor
}

// Entries lists the bundle's artifacts in index.json order.
func (s *Store) Entries() ([]Entry, error) {
	im, err := s.Index()
	if err != nil {
		return nil, err
	}
	out := make([]Entry, 0, len(im.Manifests))
	for _, d := range im.Manifests {
		out = append(out, EntryOf(d))
	}
	return out, nil
}

// EntryOf makes an Entry of an index.json descriptor.
func EntryOf(d v1.Descriptor) Entry {
	k := Kind(d.Annotations[AnnotationKind])
	if k == "" {
		k = KindImage
	}
	return Entry{Kind: k, Ref: d.Annotations[AnnotationRefName], Descriptor: d}
}

// Node is one blob reached while walking an artifact, with the chain of
// descriptors that leads to it (Parents[0] is the top-level descriptor).
type Node struct {
	Descriptor v1.Descriptor
	Parents    []v1.Descriptor
}

// Walk calls fn for d and every blob below it: child manifests of an
// index, the config and layers of a manifest. Manifests and indexes are
// read (and verified) to find their children; layers are not read. Each
// descriptor is visited in document order; a blob shared by two children
// is visited twice.
func (s *Store) Walk(d v1.Descriptor, fn func(Node) error) error {
	return s.walk(d, nil, fn)
}

func (s *Store) walk(d v1.Descriptor, parents []v1.Descriptor, fn func(Node) error) error {
	if err := fn(Node{Descriptor: d, Parents: parents}); err != nil {
		return err
	}
	if !IsIndex(d.MediaType) && !IsManifest(d.MediaType) {
		return nil
	}
	b, err := s.readDescribed(d)
	if err != nil {
		return err
	}
	below := append(append([]v1.Descriptor(nil), parents...), d)
	if IsIndex(d.MediaType) {
		im, err := v1.ParseIndexManifest(bytes.NewReader(b))
		if err != nil {
			return fmt.Errorf("parsing index %s: %w", d.Digest, err)
		}
		for _, c := range im.Manifests {
			if err := s.walk(c, below, fn); err != nil {
				return err
			}
		}
		return nil
	}
	m, err := v1.ParseManifest(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("parsing manifest %s: %w", d.Digest, err)
	}
	if err := fn(Node{Descriptor: m.Config, Parents: below}); err != nil {
		return err
	}
	for _, l := range m.Layers {
		if err := fn(Node{Descriptor: l, Parents: below}); err != nil {
			return err
		}
	}
	return nil
}

// readDescribed reads the blob d describes and checks digest and size.
func (s *Store) readDescribed(d v1.Descriptor) ([]byte, error) {
	rc, err := s.OpenBlob(d.Digest, d.Size)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(rc); err != nil {
		return nil, fmt.Errorf("reading %s: %w", d.Digest, err)
	}
	return buf.Bytes(), nil
}

// ReadManifest reads the manifest or index that d describes, verified.
func (s *Store) ReadManifest(d v1.Descriptor) ([]byte, error) { return s.readDescribed(d) }

// IsIndex reports whether mt is an OCI index or Docker manifest list.
func IsIndex(mt types.MediaType) bool {
	return mt == types.OCIImageIndex || mt == types.DockerManifestList
}

// IsManifest reports whether mt is an OCI or Docker image manifest.
func IsManifest(mt types.MediaType) bool {
	return mt == types.OCIManifestSchema1 || mt == types.DockerManifestSchema2
}

// Annotate returns d with the bundle's annotations for an artifact of
// kind k and full reference ref (other annotations on d are kept).
func Annotate(d v1.Descriptor, k Kind, ref string) v1.Descriptor {
	a := map[string]string{AnnotationKind: string(k), AnnotationRefName: ref}
	for key, v := range d.Annotations {
		a[key] = v
	}
	d.Annotations = a
	return d
}

// SetEntries replaces index.json with the given top-level descriptors
// (already annotated), sorted by kind and reference so the file does not
// depend on the order work finished in.
func (s *Store) SetEntries(ds []v1.Descriptor) error {
	sorted := append([]v1.Descriptor(nil), ds...)
	sort.SliceStable(sorted, func(i, j int) bool {
		a, b := EntryOf(sorted[i]), EntryOf(sorted[j])
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		return a.Ref < b.Ref
	})
	return s.WriteIndex(&v1.IndexManifest{
		SchemaVersion: 2,
		MediaType:     types.OCIImageIndex,
		Manifests:     sorted,
	})
}
