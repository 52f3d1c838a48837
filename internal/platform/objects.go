package platform

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// Object is one Kubernetes object, as decoded JSON.
type Object map[string]any

// Kind is the object's kind.
func (o Object) Kind() string { s, _ := o["kind"].(string); return s }

// APIVersion is the object's apiVersion.
func (o Object) APIVersion() string { s, _ := o["apiVersion"].(string); return s }

// Name is metadata.name.
func (o Object) Name() string { s, _ := o.meta()["name"].(string); return s }

// Namespace is metadata.namespace ("" when the object names none).
func (o Object) Namespace() string { s, _ := o.meta()["namespace"].(string); return s }

func (o Object) meta() map[string]any { m, _ := o["metadata"].(map[string]any); return m }

// ID is KIND/NAME, with the namespace when the object names one.
func (o Object) ID() string {
	if ns := o.Namespace(); ns != "" {
		return o.Kind() + "/" + o.Name() + " in " + ns
	}
	return o.Kind() + "/" + o.Name()
}

// Decode reads a stream of YAML or JSON documents; empty documents are
// left out, a List's items are taken one by one.
func Decode(data []byte) ([]Object, error) {
	d := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var out []Object
	for i := 0; ; i++ {
		var m map[string]any
		err := d.Decode(&m)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i+1, err)
		}
		if len(m) == 0 {
			continue
		}
		o := Object(m)
		if strings.HasSuffix(o.Kind(), "List") {
			if items, ok := m["items"].([]any); ok {
				for _, it := range items {
					if im, ok := it.(map[string]any); ok {
						out = append(out, Object(im))
					}
				}
				continue
			}
		}
		out = append(out, o)
	}
}

// IsCRD reports whether o is a CustomResourceDefinition.
func (o Object) IsCRD() bool {
	return o.Kind() == "CustomResourceDefinition" && strings.HasPrefix(o.APIVersion(), "apiextensions.k8s.io/")
}

// Group is the objects of one kubectl apply: those with an explicit
// namespace (or none at all, for cluster-scoped and namespaced-by-default
// objects, then Namespace is "").
type Group struct {
	Namespace string
	Objects   []Object
}

// Split returns the CRDs first, then the other objects grouped by the
// namespace they name (objects that name none first), each group in the
// given order. kubectl refuses `-n X` for an object that names another
// namespace, so each group is applied on its own.
func Split(objs []Object) (crds []Object, groups []Group) {
	byNS := map[string]*Group{}
	var order []string
	for _, o := range objs {
		if o.IsCRD() {
			crds = append(crds, o)
			continue
		}
		ns := o.Namespace()
		g, ok := byNS[ns]
		if !ok {
			g = &Group{Namespace: ns}
			byNS[ns] = g
			order = append(order, ns)
		}
		g.Objects = append(g.Objects, o)
	}
	sort.SliceStable(order, func(i, j int) bool { return order[i] == "" && order[j] != "" })
	for _, ns := range order {
		groups = append(groups, *byNS[ns])
	}
	return crds, groups
}

// Stream encodes objects as a JSON List for kubectl's standard input.
func Stream(objs []Object) ([]byte, error) {
	items := make([]any, len(objs))
	for i, o := range objs {
		items[i] = map[string]any(o)
	}
	return json.Marshal(map[string]any{"apiVersion": "v1", "kind": "List", "items": items})
}

// Images lists the container images objs name (containers, init and
// ephemeral containers of pod templates, pods, and CronJobs), sorted and
// without duplicates.
func Images(objs []Object) []string {
	seen := map[string]bool{}
	var walk func(v any, key string)
	walk = func(v any, key string) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				walk(x, k)
			}
		case []any:
			if key == "containers" || key == "initContainers" || key == "ephemeralContainers" {
				for _, c := range v {
					if cm, ok := c.(map[string]any); ok {
						if img, ok := cm["image"].(string); ok && img != "" {
							seen[img] = true
						}
					}
				}
			}
			for _, x := range v {
				walk(x, "")
			}
		}
	}
	for _, o := range objs {
		if o.IsCRD() {
			continue
		}
		walk(map[string]any(o), "")
	}
	out := make([]string, 0, len(seen))
	for s := range seen {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

// TypeKey is GROUP/KIND of the objects a CRD serves ("serving.kserve.io/InferenceService").
func (o Object) TypeKey() string {
	if o.IsCRD() {
		spec, _ := o["spec"].(map[string]any)
		names, _ := spec["names"].(map[string]any)
		g, _ := spec["group"].(string)
		k, _ := names["kind"].(string)
		return g + "/" + k
	}
	g, _, ok := strings.Cut(o.APIVersion(), "/")
	if !ok {
		g = ""
	}
	return g + "/" + o.Kind()
}

// CRDState says whether a CRD, as the API server returns it, is
// established, and when not, whether it waits for the CA bundle of its
// conversion webhook (injected by a controller, cert-manager's cainjector,
// that runs only once the release is applied): such a CRD's resources are
// applied last, once it is established.
func CRDState(crd Object) (established, waitsForCA bool) {
	st, _ := crd["status"].(map[string]any)
	if cond(st, "Established") == "True" {
		return true, false
	}
	for _, c := range list(st["conditions"]) {
		m, _ := c.(map[string]any)
		if m["type"] == "Established" && m["reason"] == "InvalidCABundle" {
			return false, true
		}
	}
	return false, false
}
