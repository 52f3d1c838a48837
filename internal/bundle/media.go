package bundle

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// VerifyOnMedia is a node's check of the bundle its boot media carry,
// cheap enough for every boot: the signature over SHA256SUMS (when pub is
// set), the metadata files against SHA256SUMS, every manifest and index
// read and hashed, and every other blob present with its size. Layer
// content is not hashed here: the registry seed hashes each blob once
// before it serves it, and refuses one that does not match.
//
// Boot media leave out the blobs of the OS image and of node files (the
// root file system carries their content), so a missing blob whose every
// use is an os or file artifact is expected, not a problem. It returns a
// *VerifyError listing every problem.
func (s *Store) VerifyOnMedia(ctx context.Context, pub ed25519.PublicKey) error {
	if pub != nil {
		if err := s.VerifySignature(pub); err != nil {
			return err
		}
	}
	g := s.graph(ctx)
	if err := ctx.Err(); err != nil {
		return err
	}
	ps := append([]Problem(nil), g.problems...)
	for _, h := range g.order {
		b := g.blobs[h]
		err := b.err
		if !b.checked && err == nil {
			err = s.statBlob(h, b.size)
		}
		if err == nil || errors.Is(err, errMissing) && onlyOSOrFiles(b.uses) {
			continue
		}
		ps = append(ps, Problem{Path: blobRel(h), Blob: h.String(), Uses: b.uses, Message: describeBlobError(err)})
	}
	ps = append(ps, s.checkSums(g)...)
	if len(ps) > 0 {
		return &VerifyError{Problems: ps}
	}
	return nil
}

func onlyOSOrFiles(uses []Use) bool {
	for _, u := range uses {
		if u.Kind != KindOS && u.Kind != KindFile {
			return false
		}
	}
	return len(uses) > 0
}

// ImageTag returns the tag of the bundle's image whose repository (the
// reference without its tag or digest) is repo, e.g. "registry.k8s.io/etcd"
// → "3.6.16-0", so the agent can pin what kubeadm runs to what the bundle
// holds. It fails when the bundle has none or several.
func (l *Lock) ImageTag(repo string) (string, error) {
	var tags []string
	for _, a := range l.Artifacts {
		if a.Kind != KindImage {
			continue
		}
		name := a.Ref
		if i := strings.IndexByte(name, '@'); i >= 0 {
			name = name[:i]
		}
		slash := strings.LastIndexByte(name, '/')
		colon := strings.LastIndexByte(name, ':')
		if colon <= slash {
			continue
		}
		if name[:colon] == repo {
			tags = append(tags, name[colon+1:])
		}
	}
	switch len(tags) {
	case 0:
		return "", fmt.Errorf("the bundle holds no image of %s", repo)
	case 1:
		return tags[0], nil
	}
	return "", fmt.Errorf("the bundle holds %d tags of %s (%v): cannot tell which one to run", len(tags), repo, tags)
}

// Created is when the bundle was baked, from its SBOM's creation time, or
// the zero time when the SBOM is missing or was stamped with the epoch (a
// reproducible bake without SOURCE_DATE_EPOCH).
func (s *Store) Created() time.Time {
	b, err := s.ReadFile(SBOMFile)
	if err != nil {
		return time.Time{}
	}
	var doc struct {
		CreationInfo SPDXCreationInfo `json:"creationInfo"`
	}
	if json.Unmarshal(b, &doc) != nil {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339, doc.CreationInfo.Created)
	if err != nil || t.Unix() <= 0 {
		return time.Time{}
	}
	return t
}
