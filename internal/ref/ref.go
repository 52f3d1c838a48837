// Package ref normalises image references the way the bundle records them:
// always with a registry (docker.io for Docker Hub, never index.docker.io),
// docker.io/library/ for official images, a tag (latest when none is given)
// unless the reference is pinned by digest, and the digest when it is.
package ref

import (
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// Ref is a parsed image reference.
type Ref struct {
	Registry   string // docker.io, registry.k8s.io, 127.0.0.1:5000
	Repository string // library/nginx
	Tag        string // may be empty when Digest is set
	Digest     string // sha256:…, may be empty
}

// Parse parses s. Both a tag and a digest may be given (repo:tag@sha256:…).
func Parse(s string) (Ref, error) {
	base, digest, _ := strings.Cut(s, "@")
	var r Ref
	if digest != "" {
		d, err := name.NewDigest("example.invalid/x@"+digest, name.StrictValidation)
		if err != nil {
			return Ref{}, fmt.Errorf("invalid image reference %q: bad digest", s)
		}
		r.Digest = d.DigestStr()
	}
	// ParseReference (not NewTag) also refuses URLs such as https://host/x.
	pr, err := name.ParseReference(base, name.WeakValidation)
	if err != nil {
		return Ref{}, fmt.Errorf("invalid image reference %q: %w", s, err)
	}
	tag, ok := pr.(name.Tag)
	if !ok {
		return Ref{}, fmt.Errorf("invalid image reference %q", s)
	}
	r.Registry = tag.RegistryStr()
	if r.Registry == name.DefaultRegistry {
		r.Registry = "docker.io"
	}
	r.Repository = tag.RepositoryStr()
	// NewTag defaults the tag to latest; keep that only without a digest
	// or when the tag was written out.
	if digest == "" || hasTag(base) {
		r.Tag = tag.TagStr()
	}
	return r, nil
}

// hasTag reports whether the last path element of s carries a :tag.
func hasTag(s string) bool {
	last := s[strings.LastIndex(s, "/")+1:]
	return strings.Contains(last, ":")
}

// Normalize returns the canonical form of s.
func Normalize(s string) (string, error) {
	r, err := Parse(s)
	if err != nil {
		return "", err
	}
	return r.String(), nil
}

// Name is registry/repository.
func (r Ref) Name() string { return r.Registry + "/" + r.Repository }

// String is the canonical reference: registry/repository[:tag][@digest].
func (r Ref) String() string {
	s := r.Name()
	if r.Tag != "" {
		s += ":" + r.Tag
	}
	if r.Digest != "" {
		s += "@" + r.Digest
	}
	return s
}

// Pull is the reference to fetch: by digest when pinned, else by tag.
func (r Ref) Pull(opts ...name.Option) (name.Reference, error) {
	if r.Digest != "" {
		return name.NewDigest(r.Name()+"@"+r.Digest, opts...)
	}
	return name.NewTag(r.Name()+":"+r.Tag, opts...)
}
