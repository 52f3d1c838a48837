package v1alpha1

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"kpaas.dev/appliance/api/internal/problem"
)

var (
	// An OCI repository path component: debian-12, ubuntu-22.04.
	repoName = regexp.MustCompile(`^[a-z0-9]+([._-][a-z0-9]+)*$`)
	ociTag   = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
	// Debian policy §5.6.1, plus an optional =version pin.
	debPackage = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+~:-]+)?$`)
	word       = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)
)

// Problem is one thing wrong with a definition: its field path (e.g.
// "packages[3]"; "" is the whole document) and a message.
type Problem = problem.Problem

// ValidationError lists every problem found in a definition.
type ValidationError = problem.ValidationError

type problems []Problem

func (ps *problems) add(path, format string, args ...any) {
	*ps = append(*ps, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
}

func (ps *problems) required(path, v string) bool {
	if v == "" {
		ps.add(path, "required")
		return false
	}
	return true
}

// Validate checks the definition (defaults applied) and returns a
// *ValidationError listing every problem, or nil.
func (o *OSImage) Validate() error {
	if ps := o.validate(); len(ps) > 0 {
		return &ValidationError{Problems: ps}
	}
	return nil
}

func (o *OSImage) validate() problems {
	var ps problems
	if ps.required("apiVersion", o.APIVersion) && o.APIVersion != APIVersion {
		ps.add("apiVersion", "must be %q, not %q", APIVersion, o.APIVersion)
	}
	if ps.required("kind", o.Kind) && o.Kind != Kind {
		ps.add("kind", "must be %q, not %q", Kind, o.Kind)
	}
	if n := o.Metadata.Name; ps.required("metadata.name", n) && (len(n) > 63 || !repoName.MatchString(n)) {
		ps.add("metadata.name", "%q is not a name like debian-12 (lower case letters and digits joined by '.', '_' or '-', at most 63)", n)
	}
	if v := o.Metadata.Version; ps.required("metadata.version", v) && !ociTag.MatchString(v) {
		ps.add("metadata.version", "%q cannot be an image tag", v)
	}
	switch o.Distribution {
	case "debian", "ubuntu":
	case "":
		ps.required("distribution", "")
	default:
		ps.add("distribution", "must be debian or ubuntu, not %q", o.Distribution)
	}
	if s := o.Suite; ps.required("suite", s) && !word.MatchString(s) {
		ps.add("suite", "%q is not a suite name like bookworm", s)
	}
	if m := o.Mirror; ps.required("mirror", m) {
		if u, err := url.Parse(m); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			ps.add("mirror", "%q is not an http(s) URL", m)
		}
	}
	for i, c := range o.Components {
		if !word.MatchString(c) {
			ps.add(fmt.Sprintf("components[%d]", i), "%q is not a component name like main", c)
		}
	}
	for i, s := range o.Sources {
		f := strings.Fields(s)
		if len(f) < 3 || f[0] != "deb" || !(strings.HasPrefix(f[1], "http://") || strings.HasPrefix(f[1], "https://")) {
			ps.add(fmt.Sprintf("sources[%d]", i), "%q is not an apt line like \"deb http://… SUITE COMPONENT\"", s)
		}
	}
	if o.Architecture != DefaultArchitecture {
		ps.add("architecture", "only %s is supported, not %q", DefaultArchitecture, o.Architecture)
	}
	if k := o.Kernel; ps.required("kernel", k) && !debPackage.MatchString(k) {
		ps.add("kernel", "%q is not a Debian package name", k)
	}
	if len(o.Packages) == 0 {
		ps.add("packages", "required")
	}
	seen := map[string]int{}
	for i, p := range o.Packages {
		path := fmt.Sprintf("packages[%d]", i)
		if !debPackage.MatchString(p) {
			ps.add(path, "%q is not a Debian package name", p)
			continue
		}
		name, _, _ := strings.Cut(p, "=")
		if j, dup := seen[name]; dup {
			ps.add(path, "%s is listed twice (first at packages[%d])", name, j)
		}
		seen[name] = i
	}
	return ps
}
