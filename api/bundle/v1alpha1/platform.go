package v1alpha1

import (
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"kpaas.dev/appliance/api/internal/yamldecode"
)

// Platform is what the first control plane installs once the cluster has
// formed: releases of the bundle's charts and manifests, in dependency
// order, each behind a health gate.
type Platform struct {
	// Facts are site facts the releases' values use, besides the built-in
	// ones (BuiltinFacts), with their defaults; a site's cluster
	// configuration may override them. An empty default means the site
	// must give the fact.
	Facts map[string]string `yaml:"facts,omitempty" json:"facts,omitempty"`
	// Secrets are generated once per cluster by `kpaas cluster init`
	// (never a default password) and created as Kubernetes Secrets.
	Secrets  []PlatformSecret `yaml:"secrets,omitempty" json:"secrets,omitempty"`
	Releases []Release        `yaml:"releases,omitempty" json:"releases,omitempty"`
}

// PlatformSecret is one generated per-cluster secret, created in the
// cluster as the Secret Namespace/Name: a random password under the key
// Key, or (type tls) a private key and its self-signed certificate.
type PlatformSecret struct {
	Name string `yaml:"name" json:"name"`
	// Namespace of the Kubernetes Secret (default kpaas-system).
	Namespace string `yaml:"namespace,omitempty" json:"namespace,omitempty"`
	// Type is password (the default) or tls.
	Type string `yaml:"type,omitempty" json:"type,omitempty"`
	// Key in the Secret's data (default "password"; passwords only).
	Key string `yaml:"key,omitempty" json:"key,omitempty"`
	// Length of the password (default 24, 16 to 128): charts that want
	// an exact length (Harbor's 16- and 32-character keys) say so.
	Length int `yaml:"length,omitempty" json:"length,omitempty"`
	// Htpasswd names a user: the secret then also holds that user's
	// htpasswd line for the password (bcrypt), made once with it, as the
	// part "htpasswd" (${secret:NAME/htpasswd}; key htpasswd of the
	// Kubernetes Secret). A chart given it renders the same every time.
	Htpasswd string `yaml:"htpasswd,omitempty" json:"htpasswd,omitempty"`
	// Description says what the secret opens (shown by `kpaas cluster secrets`).
	Description string `yaml:"description,omitempty" json:"description,omitempty"`
}

// Secret types.
const (
	SecretPassword = "password"
	SecretTLS      = "tls"
)

// Password lengths.
const (
	DefaultPasswordLength = 24
	MinPasswordLength     = 16
	MaxPasswordLength     = 128
)

// SecretPart is one value of a platform secret: what ${secret:NAME} or
// ${secret:NAME/PART} expands to, the key it has in the Kubernetes Secret
// and the file that holds it in a site's secrets/platform folder (and on
// the first control plane's config disk).
type SecretPart struct {
	Part string // "" for the secret's own value, else "htpasswd", "tls.crt", "tls.key", "ca.crt"
	Key  string
	File string
}

// SecretParts lists the parts of the secret name of type typ (password
// when empty) with the key key and, for a password, the htpasswd user.
// A tls secret's certificate is self-signed and its own CA (for the name
// of the secret: a chart that verifies a server's certificate by the
// service's name wants the secret named after that service), so ca.crt is
// the same certificate as tls.crt, from the same file.
func SecretParts(name, typ, key, htpasswd string) []SecretPart {
	if typ == SecretTLS {
		return []SecretPart{
			{Part: "tls.crt", Key: "tls.crt", File: name + ".tls.crt"},
			{Part: "tls.key", Key: "tls.key", File: name + ".tls.key"},
			{Part: "ca.crt", Key: "ca.crt", File: name + ".tls.crt"},
		}
	}
	if key == "" {
		key = DefaultSecretKey
	}
	parts := []SecretPart{{Key: key, File: name}}
	if htpasswd != "" {
		parts = append(parts, SecretPart{Part: "htpasswd", Key: "htpasswd", File: name + ".htpasswd"})
	}
	return parts
}

// Value is the part's value from its file's content: a password or an
// htpasswd line without the file's newline, a PEM block as written.
func (p SecretPart) Value(content string) string {
	v := strings.TrimSpace(content)
	if p.Part == "tls.crt" || p.Part == "tls.key" || p.Part == "ca.crt" {
		return v + "\n"
	}
	return v
}

// Parts lists the secret's parts.
func (s PlatformSecret) Parts() []SecretPart {
	return SecretParts(s.Name, s.Type, s.Key, s.Htpasswd)
}

// SecretRef joins a secret's name and part as a reference names them
// (NAME or NAME/PART).
func SecretRef(name, part string) string {
	if part == "" {
		return name
	}
	return name + "/" + part
}

// Release is one thing the platform installs. Exactly one of Chart,
// Manifests and Kustomize is its source.
type Release struct {
	Name string `yaml:"name" json:"name"`
	// Namespace the release's namespaced objects go to (default: the
	// chart's namespace, else Name).
	Namespace string `yaml:"namespace,omitempty" json:"namespace,omitempty"`
	// Chart names a charts[] entry of the bundle by its release name.
	Chart string `yaml:"chart,omitempty" json:"chart,omitempty"`
	// Manifests are YAML files or folders (every *.yaml, *.yml, *.json in
	// them, sorted), relative to the manifest, baked into the bundle and
	// server-side applied.
	Manifests []string `yaml:"manifests,omitempty" json:"manifests,omitempty"`
	// Kustomize is a kustomization folder, relative to the manifest,
	// rendered at bake time into manifests (nodes need no kustomize).
	Kustomize string `yaml:"kustomize,omitempty" json:"kustomize,omitempty"`
	// Values are merged over the chart's values when the release is
	// installed. Strings may name ${fact:NAME} and ${secret:NAME}.
	Values map[string]any `yaml:"values,omitempty" json:"values,omitempty"`
	// Substitute replaces placeholders in vendored manifests
	// ("{NFS_SERVER_PRIVATE_IP}": "${fact:nfsServer}").
	Substitute map[string]string `yaml:"substitute,omitempty" json:"substitute,omitempty"`
	// DependsOn names releases that must pass their gates first.
	DependsOn []string `yaml:"dependsOn,omitempty" json:"dependsOn,omitempty"`
	Gate      Gate     `yaml:"gate,omitempty" json:"gate,omitempty"`
	// Timeout bounds install plus gate (a Go duration, default 10m).
	Timeout string `yaml:"timeout,omitempty" json:"timeout,omitempty"`
	// URL is where an operator opens the release once it is up, shown in
	// the node's summary (may name facts: http://${fact:firstControlPlaneAddress}:30002).
	URL string `yaml:"url,omitempty" json:"url,omitempty"`
	// Vault makes the installer initialise and unseal the Vault server
	// of this release (the StatefulSet's pods), on every boot.
	Vault bool `yaml:"vault,omitempty" json:"vault,omitempty"`
	// Harbor marks the release that installs Harbor: once it passes its
	// gate, the agent pushes every image and chart of the bundle into it
	// (a public project per source registry) as user admin, with the
	// password of the secret values.harborAdminPassword names, at the
	// release's URL. At most one release sets it.
	Harbor bool `yaml:"harbor,omitempty" json:"harbor,omitempty"`
}

// HarborAdminSecret is the platform secret a Harbor release's values name
// as harborAdminPassword ("${secret:NAME}"), or "" when they name none.
func HarborAdminSecret(values map[string]any) string {
	v, ok := values["harborAdminPassword"].(string)
	if !ok {
		return ""
	}
	refs := Refs(v)
	if len(refs) != 1 || refs[0].Kind != "secret" || v != "${secret:"+refs[0].Name+"}" {
		return ""
	}
	return refs[0].Name
}

// Gate says when a release is healthy. By default every workload it
// created is rolled out, its Jobs complete, its CRDs established and its
// PVCs bound; Conditions add checks.
type Gate struct {
	// Skip turns the default checks off (Conditions still apply).
	Skip       bool            `yaml:"skip,omitempty" json:"skip,omitempty"`
	Conditions []GateCondition `yaml:"conditions,omitempty" json:"conditions,omitempty"`
}

// GateCondition is one extra check: an object's field (Object, JSONPath,
// Equals) or a Service answering (Service).
type GateCondition struct {
	// Object is RESOURCE/NAME as kubectl takes it (cephclusters.ceph.rook.io/rook-ceph).
	Object string `yaml:"object,omitempty" json:"object,omitempty"`
	// Namespace of Object or Service (default: the release's).
	Namespace string `yaml:"namespace,omitempty" json:"namespace,omitempty"`
	// JSONPath is a kubectl jsonpath ({.status.phase}); Equals its value.
	JSONPath string `yaml:"jsonPath,omitempty" json:"jsonPath,omitempty"`
	Equals   string `yaml:"equals,omitempty" json:"equals,omitempty"`
	// Service is NAME:PORT: the Service's cluster IP accepts connections.
	Service string `yaml:"service,omitempty" json:"service,omitempty"`
}

// Defaults of the platform section.
const (
	DefaultSecretNamespace = "kpaas-system"
	DefaultSecretKey       = "password"
	DefaultReleaseTimeout  = "10m"
)

// BuiltinFacts are the facts every site has, from its cluster
// configuration.
var BuiltinFacts = map[string]string{
	"clusterName":              "the cluster's metadata.name",
	"controlPlaneEndpoint":     "host:port of the API",
	"controlPlaneHost":         "the API endpoint's host",
	"firstControlPlaneAddress": "the first control plane's address (no prefix length)",
	"nodeAddresses":            "every node's address, comma-separated",
	"podCIDR":                  "networking.podCIDR",
	"serviceCIDR":              "networking.serviceCIDR",
	"dnsDomain":                "networking.dnsDomain",
	"storage":                  "platform.storage (nfs or rook)",
	"nfsServer":                "platform.nfsServer",
}

// refPattern matches ${fact:NAME}, ${secret:NAME} and ${secret:NAME/PART}.
var refPattern = regexp.MustCompile(`\$\{(fact|secret):([A-Za-z0-9_.-]*(?:/[A-Za-z0-9_.-]+)?)\}`)

// Ref is one ${fact:NAME} or ${secret:NAME} in a value.
type Ref struct {
	Kind string // "fact" or "secret"
	Name string
	Path string // where it was found, relative to the value
}

// Refs lists the references in v (strings, maps and lists, recursively),
// with paths relative to v, in a stable order.
func Refs(v any) []Ref {
	var out []Ref
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case string:
			for _, m := range refPattern.FindAllStringSubmatch(v, -1) {
				out = append(out, Ref{Kind: m[1], Name: m[2], Path: path})
			}
		case map[string]any:
			keys := make([]string, 0, len(v))
			for k := range v {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				walk(joinKey(path, k), v[k])
			}
		case []any:
			for i, x := range v {
				walk(fmt.Sprintf("%s[%d]", path, i), x)
			}
		}
	}
	walk("", v)
	return out
}

// Expand replaces every ${fact:NAME} and ${secret:NAME} in s with
// lookup's answer; the names lookup does not know are returned.
func Expand(s string, lookup func(kind, name string) (string, bool)) (string, []string) {
	var missing []string
	out := refPattern.ReplaceAllStringFunc(s, func(m string) string {
		sub := refPattern.FindStringSubmatch(m)
		v, ok := lookup(sub[1], sub[2])
		if !ok {
			missing = append(missing, sub[1]+":"+sub[2])
			return m
		}
		return v
	})
	return out, missing
}

// joinKey appends a key to a path the way the decoder records it.
func joinKey(path, k string) string { return yamldecode.Join(path, k) }

func (b *Bundle) defaultPlatform() {
	p := b.Platform
	if p == nil {
		return
	}
	for i := range p.Secrets {
		s := &p.Secrets[i]
		if s.Namespace == "" {
			s.Namespace = DefaultSecretNamespace
		}
		if s.Type == "" {
			s.Type = SecretPassword
		}
		if s.Key == "" && s.Type == SecretPassword {
			s.Key = DefaultSecretKey
		}
		if s.Length == 0 && s.Type == SecretPassword {
			s.Length = DefaultPasswordLength
		}
	}
	for i := range p.Releases {
		r := &p.Releases[i]
		if r.Namespace == "" {
			r.Namespace = r.Name
			for _, c := range b.Charts {
				if r.Chart != "" && c.Release == r.Chart {
					r.Namespace = c.Namespace
				}
			}
		}
		if r.Timeout == "" {
			r.Timeout = DefaultReleaseTimeout
		}
	}
}

func (ps *problems) platform(b *Bundle) {
	p := b.Platform
	if p == nil {
		return
	}
	facts := map[string]bool{}
	for k := range BuiltinFacts {
		facts[k] = true
	}
	for k := range p.Facts {
		if BuiltinFacts[k] != "" {
			ps.add("platform.facts."+k, "%q is a built-in fact; it comes from the cluster configuration", k)
		}
		facts[k] = true
	}
	parts := map[string][]string{} // a secret's references (NAME, NAME/PART), by its name
	for i, s := range p.Secrets {
		at := fmt.Sprintf("platform.secrets[%d]", i)
		if !ps.required(at+".name", s.Name) {
			continue
		}
		ps.label(at+".name", s.Name, 63)
		if _, dup := parts[s.Name]; dup {
			ps.add(at+".name", "duplicate secret %q", s.Name)
		} else {
			for _, part := range s.Parts() {
				parts[s.Name] = append(parts[s.Name], SecretRef(s.Name, part.Part))
			}
		}
		if s.Namespace != "" {
			ps.label(at+".namespace", s.Namespace, 63)
		}
		switch s.Type {
		case "", SecretPassword:
			if s.Length != 0 && (s.Length < MinPasswordLength || s.Length > MaxPasswordLength) {
				ps.add(at+".length", "%d is not between %d and %d", s.Length, MinPasswordLength, MaxPasswordLength)
			}
			if s.Htpasswd != "" && (strings.ContainsAny(s.Htpasswd, ":\n") || strings.TrimSpace(s.Htpasswd) != s.Htpasswd) {
				ps.add(at+".htpasswd", "%q is not an htpasswd user name (no colon, newline or surrounding space)", s.Htpasswd)
			}
		case SecretTLS:
			if s.Key != "" {
				ps.add(at+".key", "a tls secret has the keys tls.crt, tls.key and ca.crt; key applies to passwords")
			}
			if s.Length != 0 {
				ps.add(at+".length", "applies to passwords, not to a tls secret")
			}
			if s.Htpasswd != "" {
				ps.add(at+".htpasswd", "applies to passwords, not to a tls secret")
			}
		default:
			ps.add(at+".type", "unknown type %q (password or tls)", s.Type)
		}
	}
	charts := map[string]bool{}
	for _, c := range b.Charts {
		charts[c.Release] = true
	}
	names := map[string]int{}
	harbors := 0
	for i, r := range p.Releases {
		at := fmt.Sprintf("platform.releases[%d]", i)
		if ps.required(at+".name", r.Name) {
			ps.label(at+".name", r.Name, maxReleaseLen)
			if j, dup := names[r.Name]; dup {
				ps.add(at+".name", "duplicate release %q (same as platform.releases[%d])", r.Name, j)
			} else {
				names[r.Name] = i
			}
		}
		if r.Namespace != "" && r.Namespace != r.Name {
			ps.label(at+".namespace", r.Namespace, 63)
		}
		n := 0
		if r.Chart != "" {
			n++
			if !charts[r.Chart] {
				ps.add(at+".chart", "no chart of the bundle has release %q", r.Chart)
			}
		}
		if len(r.Manifests) > 0 {
			n++
			for j, m := range r.Manifests {
				ps.required(fmt.Sprintf("%s.manifests[%d]", at, j), m)
			}
		}
		if r.Kustomize != "" {
			n++
		}
		switch {
		case n == 0:
			ps.add(at, "needs a source: chart, manifests or kustomize")
		case n > 1:
			ps.add(at, "has more than one source (chart, manifests, kustomize): give one")
		}
		if len(r.Values) > 0 && r.Chart == "" {
			ps.add(at+".values", "values apply to charts only; use substitute for manifests")
		}
		if d, err := time.ParseDuration(r.Timeout); r.Timeout != "" && (err != nil || d <= 0) {
			ps.add(at+".timeout", "%q is not a positive duration like 10m", r.Timeout)
		}
		check := func(path string, v any) {
			for _, ref := range Refs(v) {
				switch {
				case ref.Kind == "fact" && !facts[ref.Name]:
					ps.add(joinPath(path, ref.Path), "unknown fact %q (built-in: %s; or declare it under platform.facts)", ref.Name, strings.Join(sortedKeys(BuiltinFacts), ", "))
				case ref.Kind == "secret":
					name, _, _ := strings.Cut(ref.Name, "/")
					refs, declared := parts[name]
					switch {
					case !declared:
						ps.add(joinPath(path, ref.Path), "unknown secret %q (declare it under platform.secrets)", ref.Name)
					case !slices.Contains(refs, ref.Name):
						ps.add(joinPath(path, ref.Path), "secret %q has no such part: use %s", ref.Name, strings.Join(refs, " or "))
					}
				}
			}
		}
		check(at+".values", r.Values)
		check(at+".url", r.URL)
		if r.Harbor {
			harbors++
			if harbors > 1 {
				ps.add(at+".harbor", "a second Harbor release: at most one release sets harbor")
			}
			if r.Chart == "" {
				ps.add(at+".harbor", "needs a chart release (Harbor's chart)")
			}
			if r.URL == "" {
				ps.add(at+".url", "required with harbor: where the agent pushes the bundle (http://${fact:firstControlPlaneAddress}:30002)")
			}
			if HarborAdminSecret(r.Values) == "" {
				ps.add(at+".values.harborAdminPassword", "required with harbor: \"${secret:NAME}\", the admin password the agent pushes with")
			}
		}
		for k, v := range r.Substitute {
			check(joinKey(at+".substitute", k), v)
		}
		for j, c := range r.Gate.Conditions {
			cat := fmt.Sprintf("%s.gate.conditions[%d]", at, j)
			switch {
			case c.Object == "" && c.Service == "":
				ps.add(cat, "needs object (with jsonPath and equals) or service")
			case c.Object != "" && c.Service != "":
				ps.add(cat, "has both object and service: give one")
			case c.Object != "":
				if !strings.Contains(c.Object, "/") {
					ps.add(cat+".object", "%q is not RESOURCE/NAME", c.Object)
				}
				ps.required(cat+".jsonPath", c.JSONPath)
			default:
				if name, port, ok := strings.Cut(c.Service, ":"); !ok || name == "" || port == "" {
					ps.add(cat+".service", "%q is not NAME:PORT", c.Service)
				}
			}
		}
	}
	for i, r := range p.Releases {
		for j, d := range r.DependsOn {
			at := fmt.Sprintf("platform.releases[%d].dependsOn[%d]", i, j)
			if _, ok := names[d]; !ok {
				ps.add(at, "unknown release %q", d)
			} else if d == r.Name {
				ps.add(at, "a release cannot depend on itself")
			}
		}
	}
	if cycle := Cycle(p.Releases); len(cycle) > 0 {
		ps.add(fmt.Sprintf("platform.releases[%d].dependsOn", names[cycle[0]]), "dependency cycle: %s", strings.Join(cycle, " → "))
	}
}

func joinPath(base, rel string) string {
	switch {
	case rel == "":
		return base
	case strings.HasPrefix(rel, "["):
		return base + rel
	}
	return base + "." + rel
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Cycle returns one dependency cycle among rs (first release repeated at
// the end), or nil. Unknown and self dependencies are ignored (Validate
// reports them).
func Cycle(rs []Release) []string {
	deps := map[string][]string{}
	for _, r := range rs {
		for _, d := range r.DependsOn {
			if d != r.Name {
				deps[r.Name] = append(deps[r.Name], d)
			}
		}
	}
	const (
		white = iota
		grey
		black
	)
	color := map[string]int{}
	var stack []string
	var found []string
	var visit func(n string) bool
	visit = func(n string) bool {
		color[n] = grey
		stack = append(stack, n)
		for _, d := range deps[n] {
			switch color[d] {
			case grey:
				for i, s := range stack {
					if s == d {
						found = append(append([]string{}, stack[i:]...), d)
					}
				}
				return true
			case white:
				if visit(d) {
					return true
				}
			}
		}
		stack = stack[:len(stack)-1]
		color[n] = black
		return false
	}
	for _, r := range rs {
		if color[r.Name] == white && visit(r.Name) {
			return found
		}
	}
	return nil
}
