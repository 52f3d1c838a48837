package charts

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"

	"helm.sh/helm/v3/pkg/chart"
	"sigs.k8s.io/yaml"

	"kpaas.dev/appliance/internal/ref"
)

// ImageRef is one image a chart needs.
type ImageRef struct {
	// Ref is the normalised reference, see [Normalize].
	Ref string
	// Sources are the places the image was found, sorted.
	Sources []Source
}

// Source is one place an image reference was found.
type Source struct {
	// Chart is the name of the (sub)chart, e.g. "redis".
	Chart string
	// Template is the rendered template, e.g.
	// "harbor/charts/redis/templates/statefulset.yaml", or the Chart.yaml
	// holding the artifacthub.io/images annotation.
	Template string
	// Kind and Name identify the object; both are empty for annotations.
	Kind, Name string
	// Field is the path of the value inside the object, e.g.
	// "spec.template.spec.initContainers[0].image".
	Field string
}

func (s Source) String() string {
	if s.Kind == "" {
		return fmt.Sprintf("%s %s", s.Template, s.Field)
	}
	return fmt.Sprintf("%s (%s/%s) %s", s.Template, s.Kind, s.Name, s.Field)
}

// ImageError is an image value that is not a valid reference.
type ImageError struct {
	Image  string
	Source Source
	Err    error
}

func (e *ImageError) Error() string {
	return fmt.Sprintf("image %q in %s: %v", e.Image, e.Source, e.Err)
}

func (e *ImageError) Unwrap() error { return e.Err }

// artifactHubImages is the chart annotation listing the chart's images.
const artifactHubImages = "artifacthub.io/images"

// podSpecPaths says where the pod spec sits in each built-in workload kind.
var podSpecPaths = map[string][]string{
	"Pod":                   {"spec"},
	"PodTemplate":           {"template", "spec"},
	"Deployment":            {"spec", "template", "spec"},
	"StatefulSet":           {"spec", "template", "spec"},
	"DaemonSet":             {"spec", "template", "spec"},
	"ReplicaSet":            {"spec", "template", "spec"},
	"ReplicationController": {"spec", "template", "spec"},
	"Job":                   {"spec", "template", "spec"},
	"CronJob":               {"spec", "jobTemplate", "spec", "template", "spec"},
}

// Images returns every image referenced by objs (as returned by [Render] for
// c) and by the artifacthub.io/images annotations of c and all its
// subcharts, normalised, deduplicated and sorted by reference. c may be nil
// to look at objs only.
//
// Built-in objects are searched only where they hold containers; custom
// resources are searched whole, for any non-empty string field named
// "image". Values that are not valid references, and containers without an
// image, are returned together as [*ImageError]s (joined), alongside all the
// references that are valid.
func Images(c *chart.Chart, objs []Object) ([]ImageRef, error) {
	col := collector{found: map[string][]Source{}}
	for _, o := range objs {
		src := Source{Chart: chartOf(o.Template), Template: o.Template, Kind: o.Kind(), Name: o.Name()}
		col.object(o.Object, src)
	}
	if c != nil {
		col.annotations(c)
	}

	refs := make([]ImageRef, 0, len(col.found))
	for ref, srcs := range col.found {
		slices.SortFunc(srcs, func(a, b Source) int { return cmp.Compare(a.String(), b.String()) })
		refs = append(refs, ImageRef{Ref: ref, Sources: slices.Compact(srcs)})
	}
	slices.SortFunc(refs, func(a, b ImageRef) int { return cmp.Compare(a.Ref, b.Ref) })
	return refs, errors.Join(col.errs...)
}

// collector gathers references and errors for [Images].
type collector struct {
	found map[string][]Source
	errs  []error
}

func (col *collector) add(image string, src Source) {
	ref, err := Normalize(image)
	if err != nil {
		col.errs = append(col.errs, &ImageError{Image: image, Source: src, Err: err})
		return
	}
	col.found[ref] = append(col.found[ref], src)
}

// object finds the images of one object. src names the object; its Field is
// filled in here.
func (col *collector) object(obj map[string]any, src Source) {
	apiVersion, _ := obj["apiVersion"].(string)
	kind, _ := obj["kind"].(string)
	if !builtin(apiVersion) {
		col.walk(obj, "", src)
		return
	}
	if kind == "List" { // v1 List: items are whole objects
		items, _ := obj["items"].([]any)
		for _, it := range items {
			if m, ok := it.(map[string]any); ok {
				o := Object{Template: src.Template, Object: m}
				col.object(m, Source{Chart: src.Chart, Template: src.Template, Kind: o.Kind(), Name: o.Name()})
			}
		}
		return
	}
	p, ok := podSpecPaths[kind]
	if !ok {
		return
	}
	spec := obj
	for _, k := range p {
		spec, _ = spec[k].(map[string]any)
	}
	for _, list := range []string{"initContainers", "containers", "ephemeralContainers"} {
		containers, _ := spec[list].([]any)
		for i, ctr := range containers {
			src.Field = fmt.Sprintf("%s.%s[%d].image", strings.Join(p, "."), list, i)
			m, _ := ctr.(map[string]any)
			image, _ := m["image"].(string)
			if image == "" {
				col.errs = append(col.errs, &ImageError{Source: src, Err: errors.New("container has no image")})
				continue
			}
			col.add(image, src)
		}
	}
}

// walk reports every non-empty string value of a key named "image" under v.
func (col *collector) walk(v any, field string, src Source) {
	switch v := v.(type) {
	case map[string]any:
		for _, k := range slices.Sorted(maps.Keys(v)) {
			f := k
			if field != "" {
				f = field + "." + k
			}
			if s, ok := v[k].(string); ok && k == "image" && s != "" {
				src.Field = f
				col.add(s, src)
				continue
			}
			col.walk(v[k], f, src)
		}
	case []any:
		for i, x := range v {
			col.walk(x, fmt.Sprintf("%s[%d]", field, i), src)
		}
	}
}

// annotations reports the artifacthub.io/images entries of c and its
// subcharts.
func (col *collector) annotations(c *chart.Chart) {
	if list := c.Metadata.Annotations[artifactHubImages]; list != "" {
		file := path.Join(c.ChartFullPath(), "Chart.yaml")
		var entries []struct {
			Name  string `json:"name"`
			Image string `json:"image"`
		}
		if err := yaml.Unmarshal([]byte(list), &entries); err != nil {
			col.errs = append(col.errs, fmt.Errorf("%s: parsing annotation %s: %w", file, artifactHubImages, err))
		}
		for i, e := range entries {
			col.add(e.Image, Source{
				Chart:    c.Name(),
				Template: file,
				Field:    fmt.Sprintf("annotations[%s][%d].image", artifactHubImages, i),
			})
		}
	}
	for _, d := range c.Dependencies() {
		col.annotations(d)
	}
}

// builtin reports whether apiVersion belongs to Kubernetes itself: the core
// group, groups without a dot (apps, batch, …) and *.k8s.io groups.
func builtin(apiVersion string) bool {
	group, _, ok := strings.Cut(apiVersion, "/")
	if !ok {
		return true // "v1"
	}
	return !strings.Contains(group, ".") || strings.HasSuffix(group, ".k8s.io")
}

// chartOf returns the name of the (sub)chart a template path belongs to:
// "harbor/charts/redis/templates/x.yaml" gives "redis".
func chartOf(template string) string {
	parts := strings.Split(template, "/")
	name := parts[0]
	for i := 1; i+1 < len(parts) && parts[i] == "charts"; i += 2 {
		name = parts[i+1]
	}
	return name
}

// Normalize returns image in the form a bundle stores it (internal/ref):
// registry and repository spelled out ("nginx:1.25" becomes
// "docker.io/library/nginx:1.25"), tag "latest" when there is neither tag nor
// digest, and tag and digest both kept when both are given.
func Normalize(image string) (string, error) { return ref.Normalize(image) }
