package v1alpha1

import (
	"fmt"
	"net/url"
	"path"
	"regexp"
	"strconv"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

var (
	dns1123Label      = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	kubernetesVersion = regexp.MustCompile(`^v[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$`)
	platformPattern   = regexp.MustCompile(`^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?$`)
	sha256Hex         = regexp.MustCompile(`^[0-9a-f]{64}$`)
	ociTag            = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
)

// maxReleaseLen is Helm's limit on release names.
const maxReleaseLen = 53

// Validate checks the bundle against the schema's rules and returns a
// *ValidationError listing every problem, or nil. It expects defaults to be
// applied (see Default); positions are left zero, since a Bundle built in Go
// has none. Parse does the same checks and adds positions.
func (b *Bundle) Validate() error {
	if ps := b.validate(); len(ps) > 0 {
		return &ValidationError{Problems: ps}
	}
	return nil
}

// problems collects problems without positions.
type problems []Problem

func (ps *problems) add(path, format string, args ...any) {
	*ps = append(*ps, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
}

// required reports path when v is empty and tells whether v is set.
func (ps *problems) required(path, v string) bool {
	if v == "" {
		ps.add(path, "required")
		return false
	}
	return true
}

func (b *Bundle) validate() []Problem {
	var ps problems
	if ps.required("apiVersion", b.APIVersion) && b.APIVersion != APIVersion {
		ps.add("apiVersion", "must be %q, not %q", APIVersion, b.APIVersion)
	}
	if ps.required("kind", b.Kind) && b.Kind != Kind {
		ps.add("kind", "must be %q, not %q", Kind, b.Kind)
	}
	if ps.required("metadata.name", b.Metadata.Name) {
		ps.label("metadata.name", b.Metadata.Name, 63)
	}
	ps.required("metadata.version", b.Metadata.Version)
	if v := b.Kubernetes.Version; ps.required("kubernetes.version", v) && !kubernetesVersion.MatchString(v) {
		ps.add("kubernetes.version", "%q is not a version like v1.35.4", v)
	}
	ps.platforms("platforms", b.Platforms)
	if b.OS != nil && ps.required("os.image", b.OS.Image) {
		ps.reference("os.image", b.OS.Image)
	}
	ps.images(b.Images)
	ps.charts(b.Charts)
	ps.files(b.Files)
	ps.excludes(b.Exclude)
	ps.platform(b)
	return ps
}

func (ps *problems) label(path, v string, max int) {
	switch {
	case len(v) > max:
		ps.add(path, "%q is longer than %d characters", v, max)
	case !dns1123Label.MatchString(v):
		ps.add(path, "%q is not a DNS-1123 label (lower case letters, digits and '-', starting and ending with a letter or digit)", v)
	}
}

func (ps *problems) platforms(field string, platforms []string) {
	seen := map[string]bool{}
	for i, p := range platforms {
		at := fmt.Sprintf("%s[%d]", field, i)
		switch {
		case !platformPattern.MatchString(p):
			ps.add(at, "%q is not a platform like linux/amd64 or linux/arm/v7", p)
		case seen[p]:
			ps.add(at, "duplicate platform %q", p)
		}
		seen[p] = true
	}
}

// reference reports an invalid image reference and returns the parsed one.
func (ps *problems) reference(path, ref string) (name.Reference, bool) {
	r, err := name.ParseReference(ref)
	if err != nil {
		ps.add(path, "invalid image reference %q: %v", ref, err)
		return nil, false
	}
	return r, true
}

// normalize spells a reference in full (index.docker.io/library/…), keeping
// both tag and digest when given, so that equal references compare equal.
func normalize(r name.Reference) string {
	s := r.Context().Name()
	switch r := r.(type) {
	case name.Tag:
		return s + ":" + r.TagStr()
	case name.Digest:
		return s + "@" + r.DigestStr()
	}
	return r.String()
}

func (ps *problems) images(images []Image) {
	seen := map[string]int{}
	for i, img := range images {
		at := fmt.Sprintf("images[%d]", i)
		ps.platforms(at+".platforms", img.Platforms)
		if !ps.required(at+".ref", img.Ref) {
			continue
		}
		r, ok := ps.reference(at+".ref", img.Ref)
		if !ok {
			continue
		}
		key := normalize(r)
		if j, dup := seen[key]; dup {
			ps.add(at+".ref", "duplicate image %q (same as images[%d])", img.Ref, j)
			continue
		}
		seen[key] = i
	}
}

// chartSource classifies a chart source: "repo" (an http(s) Helm
// repository), "oci" or "local".
func chartSource(source string) string {
	switch {
	case strings.HasPrefix(source, "http://"), strings.HasPrefix(source, "https://"):
		return "repo"
	case strings.HasPrefix(source, "oci://"):
		return "oci"
	}
	return "local"
}

func (ps *problems) charts(charts []Chart) {
	releases := map[string]int{}
	for i, c := range charts {
		at := fmt.Sprintf("charts[%d]", i)
		ps.required(at+".name", c.Name)
		if ps.required(at+".source", c.Source) {
			switch chartSource(c.Source) {
			case "repo":
				if u, err := url.Parse(c.Source); err != nil || u.Host == "" {
					ps.add(at+".source", "%q is not a valid repository URL", c.Source)
				}
				ps.required(at+".version", c.Version)
			case "oci":
				if _, err := name.NewRepository(strings.TrimPrefix(c.Source, "oci://")); err != nil {
					ps.add(at+".source", "%q is not an oci://host/path/name chart reference without tag: %v", c.Source, err)
				}
				ps.required(at+".version", c.Version)
			}
		}
		// Release defaults to the name and namespace to the release: when
		// the field they come from is missing, that is the one reported.
		if c.Name != "" && ps.required(at+".release", c.Release) {
			ps.label(at+".release", c.Release, maxReleaseLen)
		}
		if c.Release != "" && ps.required(at+".namespace", c.Namespace) && c.Namespace != c.Release {
			ps.label(at+".namespace", c.Namespace, 63)
		}
		for j, f := range c.ValuesFiles {
			ps.required(fmt.Sprintf("%s.valuesFiles[%d]", at, j), f)
		}
		if c.Release == "" || c.Namespace == "" {
			continue
		}
		key := c.Namespace + "/" + c.Release
		if j, dup := releases[key]; dup {
			ps.add(at+".release", "duplicate release %q in namespace %q (same as charts[%d])", c.Release, c.Namespace, j)
			continue
		}
		releases[key] = i
	}
}

func (ps *problems) files(files []File) {
	names := map[string]int{}
	for i, f := range files {
		at := fmt.Sprintf("files[%d]", i)
		if ps.required(at+".name", f.Name) {
			if j, dup := names[f.Name]; dup {
				ps.add(at+".name", "duplicate file name %q (same as files[%d])", f.Name, j)
			} else {
				names[f.Name] = i
			}
		}
		if f.Version != "" && !ociTag.MatchString(f.Version) {
			ps.add(at+".version", "%q is not usable as a tag (letters, digits, '_', '.', '-'; at most 128)", f.Version)
		}
		ps.required(at+".source", f.Source)
		if ps.required(at+".sha256", f.SHA256) && !sha256Hex.MatchString(f.SHA256) {
			ps.add(at+".sha256", "must be 64 lower-case hex digits")
		}
		if ps.required(at+".mode", f.Mode) {
			if m, err := strconv.ParseUint(f.Mode, 8, 32); err != nil || m > 0o7777 {
				ps.add(at+".mode", "%q is not an octal file mode like \"0755\"", f.Mode)
			}
		}
		if f.Target != "" && !path.IsAbs(f.Target) {
			ps.add(at+".target", "%q is not an absolute path", f.Target)
		}
	}
}

func (ps *problems) excludes(excludes []Exclude) {
	for i, e := range excludes {
		at := fmt.Sprintf("exclude[%d]", i)
		if ps.required(at+".image", e.Image) {
			if strings.ContainsAny(e.Image, "*?[\\") {
				if _, err := path.Match(e.Image, ""); err != nil {
					ps.add(at+".image", "invalid pattern %q: %v", e.Image, err)
				}
			} else {
				ps.reference(at+".image", e.Image)
			}
		}
		ps.required(at+".reason", e.Reason)
	}
}
