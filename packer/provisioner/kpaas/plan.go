package kpaas

import (
	"bytes"
	"fmt"
	"path"
	"sort"
	"strconv"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"kpaas.dev/appliance/api/bundle/v1alpha1"
	"kpaas.dev/appliance/internal/bundle"
)

// Plan is what the provisioner puts on the machine from one bundle.
type Plan struct {
	Name, Version string
	Artifacts     int
	// Bundle are the bundle's files to upload (relative paths): the
	// metadata files and every blob except, as on media, the OS image's
	// layers and the node files' blobs (the machine has its own OS; the
	// node files are installed at their targets).
	Bundle []PlanFile
	// Omitted are the blobs left out, and their bytes.
	Omitted      []string
	OmittedBytes int64
	// NodeFiles are the file artifacts with a target.
	NodeFiles []NodeFile
	// OSImage is the bundle's OS image entry (nil without one).
	OSImage *bundle.Entry
}

// PlanFile is one file of the bundle to upload.
type PlanFile struct {
	Rel  string // e.g. blobs/sha256/<hex>
	Size int64
	// SHA256 is the hex digest; empty for metadata files (hashed when
	// uploaded).
	SHA256 string
}

// NodeFile is a file artifact installed at its target.
type NodeFile struct {
	Ref    string
	Target string
	Mode   string // octal, e.g. 0755
	Blob   v1.Hash
	Size   int64
}

// UploadBytes is what the plan uploads: the bundle's files and the node
// files.
func (p *Plan) UploadBytes() int64 {
	var n int64
	for _, f := range p.Bundle {
		n += f.Size
	}
	for _, f := range p.NodeFiles {
		n += f.Size
	}
	return n
}

// MakePlan reads the bundle's index and manifests (not its layers) and
// decides what goes where.
func MakePlan(s *bundle.Store, keepOSLayers bool) (*Plan, error) {
	lock, err := s.ReadLock()
	if err != nil {
		return nil, err
	}
	p := &Plan{Name: lock.Name, Version: lock.Version, Artifacts: len(lock.Artifacts)}
	entries, err := s.Entries()
	if err != nil {
		return nil, err
	}
	var errs []string
	targets := map[string]string{}
	inRoot := map[string]bool{}
	for _, e := range entries {
		switch e.Kind {
		case bundle.KindOS:
			if p.OSImage == nil {
				e := e
				p.OSImage = &e
			}
		case bundle.KindFile:
			f, err := readNodeFile(s, e)
			switch {
			case err != nil:
				errs = append(errs, fmt.Sprintf("file %s: %v", e.Ref, err))
			case f == nil:
			case targets[path.Clean(f.Target)] != "":
				errs = append(errs, fmt.Sprintf("file %s: target %s is also the target of %s", e.Ref, f.Target, targets[path.Clean(f.Target)]))
			default:
				targets[path.Clean(f.Target)] = e.Ref
				inRoot[e.Ref] = true
				p.NodeFiles = append(p.NodeFiles, *f)
			}
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("bundle %s %s: %s", lock.Name, lock.Version, strings.Join(errs, "; "))
	}

	others := map[v1.Hash]int64{}
	rootBlobs := map[v1.Hash]int64{}
	for _, e := range entries {
		err := s.Walk(e.Descriptor, func(n bundle.Node) error {
			mt := string(n.Descriptor.MediaType)
			layer := strings.Contains(mt, "layer") || strings.Contains(mt, "tar")
			if e.Kind == bundle.KindOS && layer || e.Kind == bundle.KindFile && inRoot[e.Ref] && mt == bundle.FileLayerMediaType {
				rootBlobs[n.Descriptor.Digest] = n.Descriptor.Size
			} else {
				others[n.Descriptor.Digest] = n.Descriptor.Size
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", e.Kind, e.Ref, err)
		}
	}
	for _, name := range bundle.ExportedFiles {
		if b, err := s.ReadFile(name); err == nil {
			p.Bundle = append(p.Bundle, PlanFile{Rel: name, Size: int64(len(b))})
		}
	}
	var blobs []PlanFile
	for h, size := range others {
		blobs = append(blobs, PlanFile{Rel: blobRel(h), Size: size, SHA256: h.Hex})
	}
	for h, size := range rootBlobs {
		if _, ok := others[h]; ok {
			continue
		}
		if keepOSLayers && !isNodeFileBlob(p, h) {
			blobs = append(blobs, PlanFile{Rel: blobRel(h), Size: size, SHA256: h.Hex})
			continue
		}
		p.Omitted = append(p.Omitted, h.String())
		p.OmittedBytes += size
	}
	sort.Slice(blobs, func(i, j int) bool { return blobs[i].Rel < blobs[j].Rel })
	sort.Strings(p.Omitted)
	p.Bundle = append(p.Bundle, blobs...)
	return p, nil
}

func isNodeFileBlob(p *Plan, h v1.Hash) bool {
	for _, f := range p.NodeFiles {
		if f.Blob == h {
			return true
		}
	}
	return false
}

func blobRel(h v1.Hash) string { return path.Join(bundle.BlobsDir, h.Algorithm, h.Hex) }

// readNodeFile reads a file artifact's manifest; nil when it has no
// target (it stays in the bundle only, as on media).
func readNodeFile(s *bundle.Store, e bundle.Entry) (*NodeFile, error) {
	raw, err := s.ReadManifest(e.Descriptor)
	if err != nil {
		return nil, err
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", e.Descriptor.Digest, err)
	}
	if len(m.Layers) != 1 {
		return nil, fmt.Errorf("manifest %s has %d layers; a file artifact has one", e.Descriptor.Digest, len(m.Layers))
	}
	a := m.Annotations
	t := a[bundle.AnnotationFileTarget]
	if t == "" {
		return nil, nil
	}
	if !path.IsAbs(t) || path.Clean(t) == "/" || strings.ContainsAny(t, "'\n\\") || containsDotDot(t) {
		return nil, fmt.Errorf("target %q (%s) is not an absolute file path without \"..\" or quotes", t, bundle.AnnotationFileTarget)
	}
	mode := a[bundle.AnnotationFileMode]
	if mode == "" {
		mode = v1alpha1.DefaultFileMode
	}
	perm, err := strconv.ParseUint(mode, 8, 32)
	if err != nil || perm > 0o7777 {
		return nil, fmt.Errorf("mode %q (%s) is not an octal file mode like \"0755\"", mode, bundle.AnnotationFileMode)
	}
	return &NodeFile{Ref: e.Ref, Target: t, Mode: fmt.Sprintf("%04o", perm), Blob: m.Layers[0].Digest, Size: m.Layers[0].Size}, nil
}

func containsDotDot(p string) bool {
	for _, s := range strings.Split(p, "/") {
		if s == ".." {
			return true
		}
	}
	return false
}

// Reuse is what a machine provisioned before holds already: blobs of its
// bundle (by sha256 hex, the right size) and node files in place with the
// right content (by target). Nothing of it is uploaded again; the install
// script links the blobs into the new bundle, and checks both again with
// the uploads.
type Reuse struct {
	Blobs map[string]bool
	Files map[string]bool
	Bytes int64
}

// Reusable is the part of the plan the machine holds already.
func (p *Plan) Reusable(t Target) Reuse {
	r := Reuse{Blobs: map[string]bool{}, Files: map[string]bool{}}
	for _, f := range p.Bundle {
		if size, ok := t.Blobs[f.SHA256]; ok && f.SHA256 != "" && size == f.Size {
			r.Blobs[f.SHA256] = true
			r.Bytes += f.Size
		}
	}
	for _, f := range p.NodeFiles {
		if t.Files[f.Target] == f.Blob.Hex {
			r.Files[f.Target] = true
			r.Bytes += f.Size
		}
	}
	return r
}
