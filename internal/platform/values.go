package platform

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"

	bundlev1 "kpaas.dev/appliance/api/bundle/v1alpha1"
	cluster "kpaas.dev/appliance/api/cluster/v1alpha1"
)

// Facts are a site's facts by name: the built-in ones from its cluster
// configuration (bundlev1.BuiltinFacts), then the bundle's declared
// facts with their defaults. A fact the cluster leaves empty is absent.
func Facts(c *cluster.Cluster, declared map[string]string) map[string]string {
	f := map[string]string{}
	set := func(k, v string) {
		if v != "" {
			f[k] = v
		}
	}
	set("clusterName", c.Metadata.Name)
	set("controlPlaneHost", c.ControlPlaneEndpoint.Host)
	set("controlPlaneEndpoint", c.ControlPlaneEndpoint.String())
	var addrs []string
	for _, n := range c.Nodes {
		addrs = append(addrs, hostOf(n.Address))
	}
	set("nodeAddresses", strings.Join(addrs, ","))
	if fcp := c.FirstControlPlane(); fcp != nil {
		set("firstControlPlaneAddress", hostOf(fcp.Address))
	}
	set("podCIDR", c.Networking.PodCIDR)
	set("serviceCIDR", c.Networking.ServiceCIDR)
	set("dnsDomain", c.Networking.DNSDomain)
	if c.Platform != nil {
		set("storage", c.Platform.Storage)
		set("nfsServer", c.Platform.NFSServer)
	}
	for k, v := range declared {
		if _, ok := f[k]; !ok {
			set(k, v)
		}
	}
	return f
}

func hostOf(addr string) string {
	if ip, _, err := net.ParseCIDR(addr); err == nil {
		return ip.String()
	}
	return addr
}

// Lookup answers ${fact:NAME} from facts and ${secret:NAME} from secrets.
func Lookup(facts, secrets map[string]string) func(kind, name string) (string, bool) {
	return func(kind, name string) (string, bool) {
		var v string
		var ok bool
		switch kind {
		case "fact":
			v, ok = facts[name]
		case "secret":
			v, ok = secrets[name]
		}
		return v, ok
	}
}

// ExpandValues returns a copy of values with every ${fact:…} and
// ${secret:…} in its strings replaced. A string that is exactly one
// reference to a fact that reads as an integer or a boolean becomes that
// (a NodePort given as a fact stays a number). Every reference lookup
// cannot answer is an error, all named at once.
func ExpandValues(values map[string]any, lookup func(kind, name string) (string, bool)) (map[string]any, error) {
	var missing []string
	var walk func(v any) any
	walk = func(v any) any {
		switch v := v.(type) {
		case string:
			s, m := bundlev1.Expand(v, lookup)
			missing = append(missing, m...)
			if len(m) == 0 && s != v && strings.HasPrefix(v, "${fact:") && strings.Count(v, "${") == 1 && strings.HasSuffix(v, "}") {
				if i, err := strconv.ParseInt(s, 10, 64); err == nil {
					return i
				}
				if b, err := strconv.ParseBool(s); err == nil && (s == "true" || s == "false") {
					return b
				}
			}
			return s
		case map[string]any:
			m := make(map[string]any, len(v))
			for k, x := range v {
				m[k] = walk(x)
			}
			return m
		case []any:
			s := make([]any, len(v))
			for i, x := range v {
				s[i] = walk(x)
			}
			return s
		}
		return v
	}
	out, _ := walk(values).(map[string]any)
	if len(missing) > 0 {
		return nil, missingError(missing)
	}
	return out, nil
}

func missingError(missing []string) error {
	sort.Strings(missing)
	missing = compact(missing)
	return fmt.Errorf("the site does not give %s", strings.Join(missing, ", "))
}

func compact(s []string) []string {
	var out []string
	for i, x := range s {
		if i == 0 || x != s[i-1] {
			out = append(out, x)
		}
	}
	return out
}

// Substitute replaces each placeholder of subs (as written in vendored
// manifests, "{NFS_SERVER_PRIVATE_IP}") with its value, whose facts and
// secrets are expanded first. Placeholders are replaced longest first, so
// one that contains another is not broken.
func Substitute(data []byte, subs map[string]string, lookup func(kind, name string) (string, bool)) ([]byte, error) {
	keys := make([]string, 0, len(subs))
	for k := range subs {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if len(keys[i]) != len(keys[j]) {
			return len(keys[i]) > len(keys[j])
		}
		return keys[i] < keys[j]
	})
	var missing []string
	var pairs []string
	for _, k := range keys {
		v, m := bundlev1.Expand(subs[k], lookup)
		missing = append(missing, m...)
		pairs = append(pairs, k, v)
	}
	if len(missing) > 0 {
		return nil, missingError(missing)
	}
	return []byte(strings.NewReplacer(pairs...).Replace(string(data))), nil
}

// Digest identifies what a release installs: its source's digest and its
// expanded values (or substitutions), so that a release already deployed
// at the same digest is not installed again. Map keys are sorted by
// encoding/json, so equal values give equal digests.
func Digest(source string, values any) (string, error) {
	b, err := json.Marshal(values)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	h.Write([]byte(source))
	h.Write([]byte{0})
	h.Write(b)
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// Merge returns base with over merged on top: mappings merge key by key,
// anything else in over replaces what base holds (Helm's rule for
// user-supplied values).
func Merge(base, over map[string]any) map[string]any {
	out := make(map[string]any, len(base)+len(over))
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		if bm, ok := out[k].(map[string]any); ok {
			if om, ok := v.(map[string]any); ok {
				out[k] = Merge(bm, om)
				continue
			}
		}
		out[k] = v
	}
	return out
}
