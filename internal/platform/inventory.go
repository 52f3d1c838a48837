package platform

import (
	"slices"
	"strings"
)

// KeepAnnotation marks an object a release never deletes once applied,
// as Helm's resource policy does.
const KeepAnnotation = "helm.sh/resource-policy"

// Inventory lists what a release owns, so that the objects a newer bundle
// drops can be deleted: one "apiVersion kind namespace name" line per
// object, sorted, with ns for an object that names no namespace (a
// cluster-scoped object is deleted whatever namespace it is listed in).
// CRDs (their removal would delete every resource of theirs), Namespaces
// and objects annotated helm.sh/resource-policy: keep are left out: they
// are never deleted.
func Inventory(objs []Object, ns string) string {
	var lines []string
	for _, o := range objs {
		if o.IsCRD() || (o.Kind() == "Namespace" && o.APIVersion() == "v1") {
			continue
		}
		if ann, _ := o.meta()["annotations"].(map[string]any); ann[KeepAnnotation] == "keep" {
			continue
		}
		n := o.Namespace()
		if n == "" {
			n = ns
		}
		lines = append(lines, strings.Join([]string{o.APIVersion(), o.Kind(), n, o.Name()}, " "))
	}
	slices.Sort(lines)
	return strings.Join(slices.Compact(lines), "\n")
}

// Dropped returns the objects of the inventory old that the inventory cur
// lacks, as the least objects that name them (for kubectl delete -f).
// Objects are compared by kind, namespace and name: a new apiVersion of
// the same kind is the same object.
func Dropped(old, cur string) []Object {
	key := func(f []string) string { return strings.Join(append([]string{groupOf(f[0])}, f[1:]...), " ") }
	have := map[string]bool{}
	for _, l := range strings.Split(cur, "\n") {
		if f := strings.Fields(l); len(f) == 4 {
			have[key(f)] = true
		}
	}
	var out []Object
	for _, l := range strings.Split(old, "\n") {
		f := strings.Fields(l)
		if len(f) != 4 || have[key(f)] {
			continue
		}
		out = append(out, Object{"apiVersion": f[0], "kind": f[1], "metadata": map[string]any{"name": f[3], "namespace": f[2]}})
	}
	return out
}

func groupOf(apiVersion string) string {
	g, _, ok := strings.Cut(apiVersion, "/")
	if !ok {
		return ""
	}
	return g
}
