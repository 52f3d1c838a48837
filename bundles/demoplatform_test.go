package bundles_test

import (
	"encoding/base64"
	"os"
	"slices"
	"testing"

	"kpaas.dev/appliance/builder/toolchain"
	"kpaas.dev/appliance/internal/kubetest"
	"kpaas.dev/appliance/internal/platform"
)

// The chart defaults that must never reach a cluster: Harbor's admin
// password, database password, registry password and encryption key.
var harborDefaults = []string{"Harbor12345", "changeit", "harbor_registry_password", "not-a-secure-key"}

// checkNoDefaultSecrets fails t if a Secret the release renders holds one
// of the Harbor chart's default secrets.
func checkNoDefaultSecrets(t *testing.T, r rendered) {
	t.Helper()
	secrets := 0
	for _, o := range r.objs {
		if o.Kind() != "Secret" {
			continue
		}
		secrets++
		data, _ := o["data"].(map[string]any)
		for k, v := range data {
			s, _ := v.(string)
			raw, err := base64.StdEncoding.DecodeString(s)
			if err != nil {
				t.Errorf("release %s: Secret %s: %s is not base64: %v", r.release.Name, o.Name(), k, err)
			}
			if slices.Contains(harborDefaults, string(raw)) {
				t.Errorf("release %s: Secret %s: %s is the chart's default %q", r.release.Name, o.Name(), k, raw)
			}
		}
	}
	if secrets == 0 {
		t.Errorf("release %s renders no Secret", r.release.Name)
	}
}

// The demo platform (the official Harbor chart with the demo's values,
// and the hello chart) rendered for the demo cluster as the agent renders
// it, then applied in dependency order to a real API server: every object
// is accepted. Every image Harbor's release names is one `kpaas toolchain
// build` makes, and none of the chart's default secrets survives.
func TestDemoPlatformAppliesToRealAPIServer(t *testing.T) {
	site, err := os.ReadFile("demo/cluster.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, rs := renderPlatform(t, "demo.yaml", string(site))

	built := map[string]bool{}
	for _, ref := range toolchain.ImageRefs() {
		built[normalize(t, ref)] = true
	}
	var harbor *rendered
	for i, r := range rs {
		if r.release.Name == "harbor" {
			harbor = &rs[i]
		}
	}
	if harbor == nil {
		t.Fatal("demo.yaml has no harbor release")
	}
	images := platform.Images(harbor.objs)
	if len(images) < 7 {
		t.Errorf("Harbor's release names %d images: %v", len(images), images)
	}
	for _, img := range images {
		if !built[normalize(t, img)] {
			t.Errorf("Harbor's release names %s, which the toolchain does not build", img)
		}
	}
	checkNoDefaultSecrets(t, *harbor)

	if testing.Short() {
		t.Skip("applies the demo platform to a real API server")
	}
	k := kubetest.Start(t)
	nodes := make([]platform.Node, len(rs))
	byName := map[string]rendered{}
	for i, r := range rs {
		nodes[i] = platform.Node{Name: r.release.Name, DependsOn: r.release.DependsOn}
		byName[r.release.Name] = r
	}
	levels, err := platform.Levels(nodes)
	if err != nil {
		t.Fatal(err)
	}
	applied := 0
	for _, level := range levels {
		for _, n := range level {
			r := byName[n]
			crds, groups := platform.Split(r.objs)
			ns := []platform.Object{{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": r.release.Namespace}}}
			apply(t, k, "", append(ns, crds...))
			for _, g := range groups {
				target := ""
				if g.Namespace == "" {
					target = r.release.Namespace
				}
				apply(t, k, target, g.Objects)
				applied += len(g.Objects)
			}
		}
	}
	t.Logf("%d objects of %d releases applied", applied, len(rs))
	if got := k.Kubectl(nil, "-n", "harbor", "get", "service", "harbor", "-o", "jsonpath={.spec.ports[0].nodePort}"); got != "30002" {
		t.Errorf("Harbor's NodePort = %q, want 30002", got)
	}
}
