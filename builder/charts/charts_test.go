package charts

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/chart/loader"
)

const demo = "testdata/demo"

// demoOptions renders the demo chart the way a bundle manifest would: a
// release name and namespace, and values overriding two image tags, one of
// them in a subchart.
func demoOptions(kubeVersion string) RenderOptions {
	return RenderOptions{
		ReleaseName: "shop",
		Namespace:   "apps",
		KubeVersion: kubeVersion,
		Values: map[string]any{
			"image": map[string]any{"tag": "1.27"},
			"cache": map[string]any{"image": map[string]any{"tag": "7.4"}},
		},
	}
}

// summary flattens refs into "ref <- source" lines, one per source.
func summary(refs []ImageRef) []string {
	var lines []string
	for _, r := range refs {
		for _, s := range r.Sources {
			lines = append(lines, r.Ref+" <- "+s.String())
		}
	}
	return lines
}

func mustImages(t *testing.T, path string, opts RenderOptions) []ImageRef {
	t.Helper()
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := Render(c, opts)
	if err != nil {
		t.Fatal(err)
	}
	refs, err := Images(c, objs)
	if err != nil {
		t.Fatal(err)
	}
	return refs
}

func diff(t *testing.T, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("got:\n\t%s\nwant:\n\t%s", strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
	}
}

func TestImages(t *testing.T) {
	got := summary(mustImages(t, demo, demoOptions("v1.31.2")))
	want := []string{
		"docker.io/bitnami/kubectl:1.30 <- demo/templates/migrate-job.yaml (Job/shop-demo-migrate) spec.template.spec.containers[0].image",
		"docker.io/fluent/fluent-bit:3.1 <- demo/templates/deployment.yaml (Deployment/shop-demo) spec.template.spec.initContainers[0].image",
		"docker.io/library/busybox:1.36 <- demo/templates/statefulset.yaml (StatefulSet/shop-demo-db) spec.template.spec.initContainers[0].image",
		"docker.io/library/nginx:1.25 <- demo/Chart.yaml annotations[artifacthub.io/images][0].image",
		"docker.io/library/nginx:1.27 <- demo/templates/deployment.yaml (Deployment/shop-demo) spec.template.spec.containers[0].image",
		"docker.io/library/postgres:16.3@sha256:0000000000000000000000000000000000000000000000000000000000000001 <- demo/templates/statefulset.yaml (StatefulSet/shop-demo-db) spec.template.spec.containers[0].image",
		"docker.io/library/redis:7.2 <- demo/charts/cache/Chart.yaml annotations[artifacthub.io/images][0].image",
		"docker.io/library/redis:7.4 <- demo/charts/cache/templates/deployment.yaml (Deployment/shop-cache) spec.template.spec.containers[0].image",
		"docker.io/oliver006/redis_exporter:v1.62.0 <- demo/charts/cache/Chart.yaml annotations[artifacthub.io/images][1].image",
		"docker.io/oliver006/redis_exporter:v1.62.0 <- demo/charts/cache/templates/deployment.yaml (Deployment/shop-cache) spec.template.spec.containers[1].image",
		"ghcr.io/example/widget-runtime:0.3 <- demo/templates/widget.yaml (Widget/shop-demo) spec.runtime.pools[0].engine.image",
		"ghcr.io/example/widget-sidecar@sha256:0000000000000000000000000000000000000000000000000000000000000002 <- demo/templates/widget.yaml (Widget/shop-demo) spec.template.spec.containers[0].image",
		"quay.io/example/backup:2.0 <- demo/templates/cronjob.yaml (CronJob/shop-demo-backup) spec.jobTemplate.spec.template.spec.containers[0].image",
		// The metrics subchart is disabled, but its annotation still counts.
		"quay.io/prometheus/node-exporter:v1.8.2 <- demo/charts/metrics/Chart.yaml annotations[artifacthub.io/images][0].image",
		"registry.example.com:5000/agent:latest <- demo/templates/daemonset.yaml (DaemonSet/shop-demo-agent) spec.template.spec.containers[0].image",
	}
	diff(t, got, want)
}

func TestImagesSourceChart(t *testing.T) {
	for _, r := range mustImages(t, demo, demoOptions("v1.31.2")) {
		for _, s := range r.Sources {
			want := "demo"
			for _, sub := range []string{"cache", "metrics"} {
				if strings.HasPrefix(s.Template, "demo/charts/"+sub+"/") {
					want = sub
				}
			}
			if s.Chart != want {
				t.Errorf("%s: chart %q, want %q", s, s.Chart, want)
			}
		}
	}
}

// TestRenderKubeVersion checks that .Capabilities.KubeVersion follows the
// option and that the chart's kubeVersion constraint is enforced.
func TestRenderKubeVersion(t *testing.T) {
	var fluent []string
	for _, r := range mustImages(t, demo, demoOptions("v1.30.5")) {
		if strings.Contains(r.Ref, "fluent-bit") {
			fluent = append(fluent, summary([]ImageRef{r})...)
		}
	}
	diff(t, fluent, []string{
		"docker.io/fluent/fluent-bit:2.2 <- demo/templates/deployment.yaml (Deployment/shop-demo) spec.template.spec.containers[1].image",
	})

	c, err := Load(demo)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Render(c, demoOptions("v1.29.9"))
	if err == nil || !strings.Contains(err.Error(), `rendering chart "demo": chart requires kubeVersion >=1.30.0-0`) {
		t.Errorf("rendering for 1.29: got error %v, want a kubeVersion error", err)
	}
}

func TestRender(t *testing.T) {
	c, err := Load(demo)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := Render(c, demoOptions("v1.31.2"))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range objs {
		got = append(got, o.Template+" "+o.Kind()+"/"+o.Name())
	}
	// CRDs first, then Helm's install order, then hooks; no NOTES.txt, no
	// object from the disabled metrics subchart.
	diff(t, got, []string{
		"demo/crds/widgets.example.com.yaml CustomResourceDefinition/widgets.example.com",
		"demo/templates/configmap.yaml ConfigMap/shop-demo-config",
		"demo/templates/daemonset.yaml DaemonSet/shop-demo-agent",
		"demo/charts/cache/templates/deployment.yaml Deployment/shop-cache",
		"demo/templates/deployment.yaml Deployment/shop-demo",
		"demo/templates/statefulset.yaml StatefulSet/shop-demo-db",
		"demo/templates/cronjob.yaml CronJob/shop-demo-backup",
		"demo/templates/widget.yaml Widget/shop-demo",
		"demo/templates/migrate-job.yaml Job/shop-demo-migrate",
	})

	// Rendering works on a copy: the disabled subchart is still there.
	var deps []string
	for _, d := range c.Dependencies() {
		deps = append(deps, d.Name())
	}
	slices.Sort(deps)
	diff(t, deps, []string{"cache", "metrics"})

	// Enabling it through values renders its Pod.
	opts := demoOptions("v1.31.2")
	opts.Values["metrics"] = map[string]any{"enabled": true}
	objs, err = Render(c, opts)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(objs, func(o Object) bool { return o.Kind() == "Pod" && o.Name() == "shop-metrics" }) {
		t.Error("metrics enabled: no Pod shop-metrics rendered")
	}
}

func TestImagesBadReference(t *testing.T) {
	c, err := Load(demo)
	if err != nil {
		t.Fatal(err)
	}
	opts := demoOptions("v1.31.2")
	opts.Values["image"] = map[string]any{"repository": "Not A Repository"}
	opts.Values["agent"] = map[string]any{"image": "registry.example.com/Agent:v1"}
	objs, err := Render(c, opts)
	if err != nil {
		t.Fatal(err)
	}
	refs, err := Images(c, objs)
	if err == nil {
		t.Fatal("no error for invalid image references")
	}
	for _, want := range []string{
		`image "Not A Repository:1.25" in demo/templates/deployment.yaml (Deployment/shop-demo) spec.template.spec.containers[0].image`,
		`image "registry.example.com/Agent:v1" in demo/templates/daemonset.yaml (DaemonSet/shop-demo-agent) spec.template.spec.containers[0].image`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q\ndoes not contain %q", err, want)
		}
	}
	var ie *ImageError
	if !errors.As(err, &ie) || ie.Source.Template == "" {
		t.Errorf("error %v is not an *ImageError with a template", err)
	}
	// The valid references are still returned.
	if !slices.ContainsFunc(refs, func(r ImageRef) bool { return r.Ref == "quay.io/example/backup:2.0" }) {
		t.Errorf("valid references missing next to the error: %v", summary(refs))
	}
}

func TestImagesContainerWithoutImage(t *testing.T) {
	objs := []Object{{
		Template: "x/templates/pod.yaml",
		Object: map[string]any{
			"apiVersion": "v1", "kind": "Pod",
			"metadata": map[string]any{"name": "p"},
			"spec":     map[string]any{"containers": []any{map[string]any{"name": "c"}}},
		},
	}}
	_, err := Images(nil, objs)
	want := `image "" in x/templates/pod.yaml (Pod/p) spec.containers[0].image: container has no image`
	if err == nil || err.Error() != want {
		t.Errorf("got error %v, want %q", err, want)
	}
}

func TestNormalize(t *testing.T) {
	const dig = "sha256:0000000000000000000000000000000000000000000000000000000000000003"
	for in, want := range map[string]string{
		"nginx":                              "docker.io/library/nginx:latest",
		"nginx:1.25":                         "docker.io/library/nginx:1.25",
		"docker.io/nginx:1.25":               "docker.io/library/nginx:1.25",
		"index.docker.io/library/nginx":      "docker.io/library/nginx:latest",
		"bitnami/redis:7":                    "docker.io/bitnami/redis:7",
		"nginx@" + dig:                       "docker.io/library/nginx@" + dig,
		"nginx:1.25@" + dig:                  "docker.io/library/nginx:1.25@" + dig,
		"localhost:5000/a/b:c":               "localhost:5000/a/b:c",
		"registry.k8s.io/pause:3.10":         "registry.k8s.io/pause:3.10",
		"registry.example.com:5000/x@" + dig: "registry.example.com:5000/x@" + dig,
	} {
		got, err := Normalize(in)
		if err != nil || got != want {
			t.Errorf("Normalize(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "Nginx", "nginx:", "nginx@sha256:abc", "https://example.com/x", "a b"} {
		if got, err := Normalize(in); err == nil {
			t.Errorf("Normalize(%q) = %q, want an error", in, got)
		}
	}
}

func TestPackageDeterministic(t *testing.T) {
	c, err := Load(demo)
	if err != nil {
		t.Fatal(err)
	}
	mtime := time.Date(2025, 1, 2, 3, 4, 5, 678, time.FixedZone("KST", 9*3600))
	pkg := func() []byte {
		var b bytes.Buffer
		if err := Package(c, &b, mtime); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	first, second := pkg(), pkg()
	if sha256.Sum256(first) != sha256.Sum256(second) || !bytes.Equal(first, second) {
		t.Fatal("packaging the same chart twice gave different bytes")
	}

	// Render again after packaging: Package must not have changed c, and the
	// archive must not depend on whether c was rendered.
	if _, err := Render(c, demoOptions("v1.31.2")); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first, pkg()) {
		t.Fatal("packaging after rendering gave different bytes")
	}

	// Loading the archive and packaging it again is a fixed point.
	loaded, err := loader.LoadArchive(bytes.NewReader(first))
	if err != nil {
		t.Fatalf("helm cannot load the archive: %v", err)
	}
	var again bytes.Buffer
	if err := Package(loaded, &again, mtime); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first, again.Bytes()) {
		t.Error("packaging a loaded package gave different bytes")
	}
}

func TestPackageLayout(t *testing.T) {
	c, err := Load(demo)
	if err != nil {
		t.Fatal(err)
	}
	mtime := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	var b bytes.Buffer
	if err := Package(c, &b, mtime); err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(b.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if zr.Name != "" || !zr.ModTime.IsZero() {
		t.Errorf("gzip header has name %q, mtime %v; want neither", zr.Name, zr.ModTime)
	}
	var names []string
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Uid != 0 || h.Gid != 0 || h.Mode != 0o644 || !h.ModTime.Equal(mtime) || h.Typeflag != tar.TypeReg {
			t.Errorf("%s: uid %d gid %d mode %o mtime %v type %c", h.Name, h.Uid, h.Gid, h.Mode, h.ModTime, h.Typeflag)
		}
		names = append(names, h.Name)
	}
	diff(t, names, []string{
		"demo/Chart.yaml",
		"demo/charts/cache/Chart.yaml",
		"demo/charts/cache/templates/deployment.yaml",
		"demo/charts/cache/values.yaml",
		"demo/charts/metrics/Chart.yaml",
		"demo/charts/metrics/templates/pod.yaml",
		"demo/charts/metrics/values.yaml",
		"demo/crds/widgets.example.com.yaml",
		"demo/templates/NOTES.txt",
		"demo/templates/_helpers.tpl",
		"demo/templates/configmap.yaml",
		"demo/templates/cronjob.yaml",
		"demo/templates/daemonset.yaml",
		"demo/templates/deployment.yaml",
		"demo/templates/migrate-job.yaml",
		"demo/templates/statefulset.yaml",
		"demo/templates/widget.yaml",
		"demo/values.yaml",
	})
}

// TestPackageRoundTrip checks that the packaged chart, loaded back by Helm,
// renders to the same images as the folder it came from.
func TestPackageRoundTrip(t *testing.T) {
	c, err := Load(demo)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := Package(c, &b, time.Unix(0, 0)); err != nil {
		t.Fatal(err)
	}
	loaded, err := loader.LoadArchive(&b)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.Name() != "demo" || loaded.Metadata.Version != "0.1.0" || len(loaded.Dependencies()) != 2 {
		t.Fatalf("loaded %s %s with %d subcharts", loaded.Name(), loaded.Metadata.Version, len(loaded.Dependencies()))
	}
	objs, err := Render(loaded, demoOptions("v1.31.2"))
	if err != nil {
		t.Fatal(err)
	}
	refs, err := Images(loaded, objs)
	if err != nil {
		t.Fatal(err)
	}
	diff(t, summary(refs), summary(mustImages(t, demo, demoOptions("v1.31.2"))))
}

func TestLoadMissingDependency(t *testing.T) {
	dir := t.TempDir()
	c, err := Load(demo)
	if err != nil {
		t.Fatal(err)
	}
	// Drop the vendored subcharts, keep them declared in Chart.yaml.
	c.SetDependencies()
	var b bytes.Buffer
	if err := Package(c, &b, time.Unix(0, 0)); err != nil {
		t.Fatal(err)
	}
	path := dir + "/demo-0.1.0.tgz"
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Load(path)
	if err == nil || !strings.Contains(err.Error(), "dependencies cache, metrics are missing from charts/") {
		t.Errorf("got error %v, want missing dependencies", err)
	}
}

func TestImagesBadAnnotation(t *testing.T) {
	c, err := Load(demo)
	if err != nil {
		t.Fatal(err)
	}
	c.Metadata.Annotations[artifactHubImages] = "- name: web\n  image: [not, a, string"
	_, err = Images(c, nil)
	if err == nil || !strings.Contains(err.Error(), "demo/Chart.yaml: parsing annotation artifacthub.io/images") {
		t.Errorf("got error %v, want an annotation parse error naming demo/Chart.yaml", err)
	}

	c.Metadata.Annotations[artifactHubImages] = "- name: web\n  image: nginx:latest:latest"
	_, err = Images(c, nil)
	want := `image "nginx:latest:latest" in demo/Chart.yaml annotations[artifacthub.io/images][0].image`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("got error %v, want it to contain %q", err, want)
	}
}
