package push

import (
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"

	"kpaas.dev/appliance/internal/harbor"
)

// reference is a parsed full reference: registry/path[:tag][@digest].
type reference struct {
	Registry string // "docker.io"
	Path     string // "library/nginx"
	Tag      string // "1.25", may be empty
	Digest   string // "sha256:…", may be empty
}

// dockerHubAliases are the host names of Docker Hub; they all map to the
// canonical "docker.io" (the name containerd's mirror configuration uses).
var dockerHubAliases = map[string]bool{"index.docker.io": true, "registry-1.docker.io": true, "docker.io": true}

var (
	pathComponent = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*$`)
	tagPattern    = regexp.MustCompile(`^[\w][\w.+-]{0,127}$`) // "+" allowed: Helm versions, mapped to "_"
)

// parseRef parses a bundle entry's reference. Unlike docker's familiar
// form it keeps the tag of a "name:tag@digest" reference, and it accepts
// short names (nginx → docker.io/library/nginx).
func parseRef(s string) (reference, error) {
	var r reference
	rest := s
	if i := strings.IndexByte(rest, '@'); i >= 0 {
		r.Digest = rest[i+1:]
		rest = rest[:i]
		alg, hx, ok := strings.Cut(r.Digest, ":")
		if _, err := hex.DecodeString(hx); !ok || alg != "sha256" || len(hx) != 64 || err != nil {
			return r, fmt.Errorf("reference %q: invalid digest %q", s, r.Digest)
		}
	}
	if i := strings.LastIndexByte(rest, ':'); i > strings.LastIndexByte(rest, '/') {
		r.Tag = rest[i+1:]
		rest = rest[:i]
		if !tagPattern.MatchString(r.Tag) {
			return r, fmt.Errorf("reference %q: invalid tag %q", s, r.Tag)
		}
	}
	first, path, hasSlash := strings.Cut(rest, "/")
	if hasSlash && (strings.ContainsAny(first, ".:") || first == "localhost") {
		r.Registry = first
		r.Path = path
	} else {
		r.Registry = "docker.io"
		r.Path = rest
	}
	if dockerHubAliases[r.Registry] {
		r.Registry = "docker.io"
		if !strings.Contains(r.Path, "/") {
			r.Path = "library/" + r.Path
		}
	}
	if r.Path == "" {
		return r, fmt.Errorf("reference %q: no repository", s)
	}
	for _, c := range strings.Split(r.Path, "/") {
		if !pathComponent.MatchString(c) {
			return r, fmt.Errorf("reference %q: invalid repository path component %q", s, c)
		}
	}
	if r.Tag == "" && r.Digest == "" {
		return r, fmt.Errorf("reference %q: neither tag nor digest", s)
	}
	return r, nil
}

// Mapping decides where an artifact goes in the target registry.
type Mapping struct {
	// Project puts every artifact under one Harbor project (or, without
	// Harbor, one first path component): docker.io/library/nginx:1.25 →
	// NAME/library/nginx:1.25.
	Project string
	// Prefix puts every artifact under a path prefix that may have several
	// components: docker.io/library/nginx → PREFIX/library/nginx. In Harbor
	// mode its first component is the project.
	Prefix string
	// With neither set (project per registry, the default), the source
	// registry becomes the first component — a Harbor project named after
	// the registry host (harbor.ProjectNameFor: docker.io stays
	// "docker.io", localhost:5000 becomes "localhost-5000"):
	// docker.io/library/nginx:1.25 → docker.io/library/nginx:1.25 under
	// the target host.
}

// target is where one artifact is pushed.
type target struct {
	Repo    string // repository path in the target registry
	Project string // first component of Repo (the Harbor project)
	Tag     string // may be empty (digest-only reference)
}

// Place is where a push puts the artifact of a bundle entry's reference
// (registry/path[:tag][@digest]): its repository in the target registry
// (the first component is the Harbor project) and its tag ("" when it
// has none). Those who check a registry after a push ask it for these.
func (m Mapping) Place(ref string) (repo, tag string, err error) {
	r, err := parseRef(ref)
	if err != nil {
		return "", "", err
	}
	t, err := m.target(r)
	return t.Repo, t.Tag, err
}

// target maps a parsed reference to its repository and tag in the target
// registry. Helm's "+" in chart versions becomes "_", as Helm does for OCI
// tags.
func (m Mapping) target(ref reference) (target, error) {
	var repo string
	switch {
	case m.Project != "":
		repo = m.Project + "/" + ref.Path
	case m.Prefix != "":
		repo = strings.Trim(m.Prefix, "/") + "/" + ref.Path
	default:
		repo = harbor.ProjectNameFor(ref.Registry) + "/" + ref.Path
	}
	for _, c := range strings.Split(repo, "/") {
		if !pathComponent.MatchString(c) {
			return target{}, fmt.Errorf("target repository %q: invalid path component %q", repo, c)
		}
	}
	if len(repo) > 255 {
		return target{}, fmt.Errorf("target repository %q is longer than 255 characters", repo)
	}
	project, _, _ := strings.Cut(repo, "/")
	return target{Repo: repo, Project: project, Tag: strings.ReplaceAll(ref.Tag, "+", "_")}, nil
}
