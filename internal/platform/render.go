package platform

import (
	"bytes"
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/releaseutil"
)

// LoadChart reads a chart archive (the layer of a chart artifact).
func LoadChart(r io.Reader) (*chart.Chart, error) {
	c, err := loader.LoadArchive(r)
	if err != nil {
		return nil, fmt.Errorf("loading chart: %w", err)
	}
	return c, nil
}

// RenderChart renders c as `helm install` would for the release name in
// namespace against kubeVersion, with values merged over the chart's own:
// its CRDs (crds/), then its objects in Helm's install order, then its
// hooks (as ordinary objects: the installer has no hook lifecycle; a
// hook Job is gated like any Job). Nothing contacts a cluster: the
// engine's lookup function is not wired, so it returns nothing.
func RenderChart(c *chart.Chart, name, namespace, kubeVersion string, values map[string]any) ([]Object, error) {
	caps := chartutil.DefaultCapabilities.Copy()
	if kubeVersion != "" {
		kv, err := chartutil.ParseKubeVersion(kubeVersion)
		if err != nil {
			return nil, fmt.Errorf("parsing kubernetes version %q: %w", kubeVersion, err)
		}
		caps.KubeVersion = *kv
	}
	if values == nil {
		values = map[string]any{}
	}
	if err := chartutil.ProcessDependenciesWithMerge(c, values); err != nil {
		return nil, fmt.Errorf("chart %s: processing dependencies: %w", c.Name(), err)
	}
	top, err := chartutil.ToRenderValues(c, values, chartutil.ReleaseOptions{
		Name: name, Namespace: cmp.Or(namespace, "default"), Revision: 1, IsInstall: true,
	}, caps)
	if err != nil {
		return nil, fmt.Errorf("chart %s: %w", c.Name(), err)
	}
	files, err := engine.Engine{}.Render(c, top)
	if err != nil {
		return nil, fmt.Errorf("chart %s: %w", c.Name(), err)
	}
	for name := range files {
		if strings.HasSuffix(name, "/NOTES.txt") {
			delete(files, name)
		}
	}
	hooks, manifests, err := releaseutil.SortManifests(files, caps.APIVersions, releaseutil.InstallOrder)
	if err != nil {
		return nil, fmt.Errorf("chart %s: %w", c.Name(), err)
	}
	var out []Object
	add := func(file string, data []byte) error {
		objs, err := Decode(data)
		if err != nil {
			return fmt.Errorf("chart %s: %s: %w", c.Name(), file, err)
		}
		out = append(out, objs...)
		return nil
	}
	for _, crd := range c.CRDObjects() {
		if err := add(crd.Filename, crd.File.Data); err != nil {
			return nil, err
		}
	}
	for _, m := range manifests {
		if err := add(m.Name, []byte(m.Content)); err != nil {
			return nil, err
		}
	}
	// Test hooks are not part of an install.
	for _, h := range hooks {
		if slices.ContainsFunc(h.Events, func(e release.HookEvent) bool { return strings.HasPrefix(string(e), "test") }) {
			continue
		}
		if err := add(h.Path, bytes.TrimSpace([]byte(h.Manifest))); err != nil {
			return nil, err
		}
	}
	return out, nil
}
