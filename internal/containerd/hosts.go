// Package containerd writes containerd's registry host configuration
// (the config_path folder of the CRI plugin, one hosts.toml per upstream
// registry) so that every pull of an upstream image goes to mirrors
// first, in order: the cluster's Harbor when the platform has one, then
// the node's registry seed on 127.0.0.1.
//
// containerd asks the seed for /v2/<path>/manifests/<ref>?ns=<upstream>;
// the seed uses ns to find the original repository (see internal/seed).
// Harbor holds each upstream's images in a project named after it (what
// `kpaas push --harbor` and the agent's harbor phase create), so its host
// entry is Harbor's API root for that project, /v2/<project>, with
// override_path.
//
// containerd tries the hosts in order and moves to the next one when a
// host cannot be reached or answers an error (404 for an image Harbor does
// not have, 401, 5xx), so pulls keep working while Harbor is down or not
// yet filled.
//
// The output is a pure function of its inputs (no timestamps), so writing
// it again changes nothing and golden tests hold it.
package containerd

import (
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"kpaas.dev/appliance/internal/atomicfile"
	"kpaas.dev/appliance/internal/bundle"
	"kpaas.dev/appliance/internal/harbor"
	"kpaas.dev/appliance/internal/ref"
)

// DefaultUpstreams are the registries configured whatever the bundle holds:
// the public registries the platform's images and charts come from.
var DefaultUpstreams = []string{"docker.io", "gcr.io", "ghcr.io", "quay.io", "registry.k8s.io"}

// hostRE is a registry host with an optional port: the name of a folder
// under config_path, so never a path.
var hostRE = regexp.MustCompile(`^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]{1,5})?$`)

// ServerURL is the upstream endpoint containerd falls back to when no
// mirror answers: Docker Hub's API lives at registry-1.docker.io.
func ServerURL(upstream string) string {
	if upstream == "docker.io" {
		return "https://registry-1.docker.io"
	}
	return "https://" + upstream
}

// A Mirror is one host containerd asks for an upstream's images.
type Mirror struct {
	// URL is http(s)://host[:port] (the registry API below /v2), or with
	// OverridePath the API root itself (http://harbor:30002/v2/docker.io).
	URL          string
	OverridePath bool
}

// SeedMirror is the node's registry seed at seedURL (http://127.0.0.1:PORT).
func SeedMirror(seedURL string) Mirror { return Mirror{URL: seedURL} }

// HarborMirror is upstream's project in the Harbor at harborURL
// (http(s)://host[:port]): the project is named after the upstream
// registry (harbor.ProjectNameFor), as the push creates it.
func HarborMirror(harborURL, upstream string) Mirror {
	return Mirror{URL: strings.TrimSuffix(harborURL, "/") + "/v2/" + harbor.ProjectNameFor(upstream), OverridePath: true}
}

// HostsTOML renders hosts.toml for one upstream registry with mirrors as
// its hosts, asked in order, for pull and resolve. Callers validate their
// inputs with ValidateUpstream and ValidateMirror (WriteHostsDir does).
func HostsTOML(upstream string, mirrors ...Mirror) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Written by kpaas: pulls of %s images ask the mirrors below first, in order.\n", upstream)
	fmt.Fprintf(&b, "server = %s\n", quote(ServerURL(upstream)))
	for _, m := range mirrors {
		fmt.Fprintf(&b, "\n[host.%s]\n", quote(m.URL))
		b.WriteString("  capabilities = [\"pull\", \"resolve\"]\n")
		if m.OverridePath {
			b.WriteString("  override_path = true\n")
		}
	}
	return b.Bytes()
}

// HarborHost is the registry host (host[:port]) of the Harbor at
// harborURL and its hosts.toml: the images users push into Harbor's own
// projects (HOST/PROJECT/NAME:TAG) are pulled from Harbor itself, over
// plain HTTP when its URL says http (containerd assumes HTTPS otherwise).
func HarborHost(harborURL string) (host string, hostsTOML []byte, err error) {
	if err := ValidateMirror(harborURL); err != nil {
		return "", nil, err
	}
	u, _ := url.Parse(harborURL)
	if err := ValidateUpstream(u.Host); err != nil {
		return "", nil, err
	}
	root := u.Scheme + "://" + u.Host
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Written by kpaas: the cluster's Harbor, for the images of its own projects.\n")
	fmt.Fprintf(&b, "server = %s\n", quote(root))
	fmt.Fprintf(&b, "\n[host.%s]\n  capabilities = [\"pull\", \"resolve\"]\n", quote(root))
	return u.Host, b.Bytes(), nil
}

// quote writes s as a TOML basic string. Inputs are validated hosts and
// URLs; escaping the two special characters keeps the output well formed
// whatever they hold.
func quote(s string) string {
	s = strings.ReplaceAll(s, `\`, `\\`)
	s = strings.ReplaceAll(s, `"`, `\"`)
	return `"` + s + `"`
}

// Mirrors are upstream's hosts: Harbor's project first when harborURL is
// set, then the seed.
func Mirrors(upstream, harborURL, seedURL string) []Mirror {
	var ms []Mirror
	if harborURL != "" {
		ms = append(ms, HarborMirror(harborURL, upstream))
	}
	return append(ms, SeedMirror(seedURL))
}

// ValidateUpstream checks that upstream is a registry host[:port].
func ValidateUpstream(upstream string) error {
	if !hostRE.MatchString(upstream) {
		return fmt.Errorf("invalid upstream registry %q: want a host name with an optional port", upstream)
	}
	return nil
}

// ValidateMirror checks that mirrorURL is an http(s) URL of a host, with
// no query or fragment.
func ValidateMirror(mirrorURL string) error {
	u, err := url.Parse(mirrorURL)
	if err != nil {
		return fmt.Errorf("invalid mirror URL %q: %w", mirrorURL, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("invalid mirror URL %q: want http(s)://host[:port][/path]", mirrorURL)
	}
	if strings.ContainsAny(mirrorURL, "\"\\\n\r\t") {
		return fmt.Errorf("invalid mirror URL %q: contains quotes, backslashes or control characters", mirrorURL)
	}
	return nil
}

// Upstreams lists the registries to configure for a bundle: the default
// ones and every registry its artifacts' references name, sorted and
// without duplicates. References that do not parse are skipped (the seed
// does not serve them either).
func Upstreams(entries []bundle.Entry) []string {
	set := map[string]bool{}
	for _, u := range DefaultUpstreams {
		set[u] = true
	}
	for _, e := range entries {
		if e.Ref == "" {
			continue
		}
		r, err := ref.Parse(e.Ref)
		if err != nil || ValidateUpstream(r.Registry) != nil {
			continue
		}
		set[r.Registry] = true
	}
	out := make([]string, 0, len(set))
	for u := range set {
		out = append(out, u)
	}
	sort.Strings(out)
	return out
}

// WriteHostsDir writes <dir>/<upstream>/hosts.toml for every upstream,
// each file atomically: the Harbor at harborURL first (none when empty),
// then the seed at seedURL; and Harbor's own host (HarborHost). Every input is checked before anything is
// written; all invalid ones are reported together.
func WriteHostsDir(dir string, upstreams []string, harborURL, seedURL string) error {
	var errs []error
	if harborURL != "" {
		if err := ValidateMirror(harborURL); err != nil {
			errs = append(errs, err)
		}
	}
	if err := ValidateMirror(seedURL); err != nil {
		errs = append(errs, err)
	}
	for _, u := range upstreams {
		if err := ValidateUpstream(u); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("writing containerd hosts to %s: %w", dir, errors.Join(errs...))
	}
	files := map[string][]byte{}
	for _, u := range upstreams {
		files[u] = HostsTOML(u, Mirrors(u, harborURL, seedURL)...)
	}
	if harborURL != "" {
		host, data, err := HarborHost(harborURL)
		if err != nil {
			return fmt.Errorf("writing containerd hosts to %s: %w", dir, err)
		}
		files[host] = data
	}
	for host, data := range files {
		p := filepath.Join(dir, host, "hosts.toml")
		if old, err := os.ReadFile(p); err == nil && bytes.Equal(old, data) {
			continue
		}
		if err := atomicfile.WriteFile(p, data, 0o644); err != nil {
			return fmt.Errorf("writing containerd hosts for %s: %w", host, err)
		}
	}
	return nil
}
