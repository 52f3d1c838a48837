package charts

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/releaseutil"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// RenderOptions are the inputs of [Render], the same ones `helm template`
// takes.
type RenderOptions struct {
	// ReleaseName is .Release.Name; "release-name" when empty, as in helm.
	ReleaseName string
	// Namespace is .Release.Namespace; "default" when empty.
	Namespace string
	// Values are the user-supplied values (what -f and --set give helm);
	// the chart's own values.yaml is merged underneath.
	Values map[string]any
	// KubeVersion is the Kubernetes version the chart is rendered for, e.g.
	// "v1.31.4". It becomes .Capabilities.KubeVersion and is checked against
	// the chart's kubeVersion constraint. Empty means Helm's built-in default.
	KubeVersion string
	// APIVersions are added to .Capabilities.APIVersions, e.g.
	// "monitoring.coreos.com/v1" for charts that only render a ServiceMonitor
	// when the cluster serves it.
	APIVersions []string
}

// Object is one rendered Kubernetes object.
type Object struct {
	// Template is where the object came from, relative to the chart's
	// parent: "harbor/templates/core/core-dpl.yaml",
	// "harbor/charts/redis/templates/statefulset.yaml" or, for CRDs,
	// "harbor/crds/crd.yaml".
	Template string
	// Object is the decoded manifest, as in unstructured.Unstructured.
	Object map[string]any
}

// APIVersion returns the object's apiVersion.
func (o Object) APIVersion() string { s, _ := o.Object["apiVersion"].(string); return s }

// Kind returns the object's kind.
func (o Object) Kind() string { s, _ := o.Object["kind"].(string); return s }

// Name returns the object's metadata.name.
func (o Object) Name() string {
	md, _ := o.Object["metadata"].(map[string]any)
	s, _ := md["name"].(string)
	return s
}

// Render renders c the way `helm template --include-crds` does, without
// contacting any cluster: dependencies are enabled or disabled by their
// conditions and tags, import-values are applied, values are checked against
// values.schema.json, and the chart's kubeVersion constraint is checked
// against opts.KubeVersion.
//
// The result holds the CRDs of the chart and its enabled subcharts, then the
// ordinary objects in Helm's install order, then the hooks. NOTES.txt and
// empty documents are left out. c itself is not modified.
func Render(c *chart.Chart, opts RenderOptions) ([]Object, error) {
	objs, err := render(copyChart(c), opts)
	if err != nil {
		return nil, fmt.Errorf("rendering chart %q: %w", c.Name(), err)
	}
	return objs, nil
}

func render(c *chart.Chart, opts RenderOptions) ([]Object, error) {
	caps := chartutil.DefaultCapabilities.Copy()
	if opts.KubeVersion != "" {
		kv, err := chartutil.ParseKubeVersion(opts.KubeVersion)
		if err != nil {
			return nil, fmt.Errorf("parsing kubernetes version %q: %w", opts.KubeVersion, err)
		}
		caps.KubeVersion = *kv
	}
	caps.APIVersions = append(slices.Clone(caps.APIVersions), opts.APIVersions...)
	if want := c.Metadata.KubeVersion; want != "" && !chartutil.IsCompatibleRange(want, caps.KubeVersion.Version) {
		return nil, fmt.Errorf("chart requires kubeVersion %s, which is incompatible with kubernetes %s", want, caps.KubeVersion.Version)
	}

	vals := opts.Values
	if vals == nil {
		vals = map[string]any{}
	}
	if err := chartutil.ProcessDependenciesWithMerge(c, vals); err != nil {
		return nil, fmt.Errorf("processing dependencies: %w", err)
	}
	release := chartutil.ReleaseOptions{
		Name:      cmp.Or(opts.ReleaseName, "release-name"),
		Namespace: cmp.Or(opts.Namespace, "default"),
		Revision:  1,
		IsInstall: true,
	}
	top, err := chartutil.ToRenderValues(c, vals, release, caps)
	if err != nil {
		return nil, err
	}
	files, err := engine.Engine{}.Render(c, top)
	if err != nil {
		return nil, err
	}
	for name := range files {
		if strings.HasSuffix(name, "/NOTES.txt") {
			delete(files, name)
		}
	}
	hooks, manifests, err := releaseutil.SortManifests(files, caps.APIVersions, releaseutil.InstallOrder)
	if err != nil {
		return nil, err
	}

	var objs []Object
	for _, crd := range c.CRDObjects() {
		if objs, err = decode(objs, crd.Filename, crd.File.Data); err != nil {
			return nil, err
		}
	}
	for _, m := range manifests {
		if objs, err = decode(objs, m.Name, []byte(m.Content)); err != nil {
			return nil, err
		}
	}
	for _, h := range hooks {
		if objs, err = decode(objs, h.Path, []byte(h.Manifest)); err != nil {
			return nil, err
		}
	}
	return objs, nil
}

// decode appends the YAML or JSON documents in data to objs.
func decode(objs []Object, template string, data []byte) ([]Object, error) {
	d := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		var m map[string]any
		err := d.Decode(&m)
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("decoding %s: %w", template, err)
		}
		if len(m) > 0 {
			objs = append(objs, Object{Template: template, Object: m})
		}
	}
}

// copyChart returns a copy of c that rendering may modify: processing
// dependencies rewrites metadata, values and the list of subcharts. File
// contents are shared.
func copyChart(c *chart.Chart) *chart.Chart {
	cp := *c
	md := *c.Metadata
	md.Dependencies = nil
	for _, d := range c.Metadata.Dependencies {
		dd := *d
		md.Dependencies = append(md.Dependencies, &dd)
	}
	md.Annotations = maps.Clone(md.Annotations)
	cp.Metadata = &md
	cp.Values = copyValue(c.Values).(map[string]any)
	// Helm's loader returns subcharts in map order; sort them so that
	// rendering is deterministic.
	var deps []*chart.Chart
	for _, d := range c.Dependencies() {
		deps = append(deps, copyChart(d))
	}
	slices.SortFunc(deps, func(a, b *chart.Chart) int { return strings.Compare(a.Name(), b.Name()) })
	cp.SetDependencies(deps...)
	return &cp
}

func copyValue(v any) any {
	switch v := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, x := range v {
			m[k] = copyValue(x)
		}
		return m
	case []any:
		s := make([]any, len(v))
		for i, x := range v {
			s[i] = copyValue(x)
		}
		return s
	default:
		return v
	}
}
