package bundles_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
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

// checkProbeTimeouts fails t if a container of the release has a probe
// that runs a command, or any probe when the container is one of slow,
// with a timeout under min seconds. Harbor's database probe runs psql
// under PostgreSQL's postmaster (PID 1): a probe killed on timeout leaves
// psql orphaned, the postmaster reaps it and restarts every backend as
// after a crash (seen under QEMU with the chart's 1 s). Harbor's core
// answered its liveness probe in more than the chart's 1 s twice in a row
// on an emulated worker, right after its schema migration, and was killed.
func checkProbeTimeouts(t *testing.T, r rendered, min int, slow ...string) {
	t.Helper()
	for _, o := range r.objs {
		top, _ := o["spec"].(map[string]any)
		tmpl, _ := top["template"].(map[string]any)
		spec, _ := tmpl["spec"].(map[string]any)
		containers, _ := spec["containers"].([]any)
		for _, c := range containers {
			c, _ := c.(map[string]any)
			for _, kind := range []string{"livenessProbe", "readinessProbe", "startupProbe"} {
				p, _ := c[kind].(map[string]any)
				if p == nil || p["exec"] == nil && !slices.Contains(slow, fmt.Sprint(c["name"])) {
					continue
				}
				// YAML decodes numbers as int or float64.
				if secs := fmt.Sprint(p["timeoutSeconds"]); secs == "<nil>" || atoi(secs) < min {
					t.Errorf("release %s: %s %s: container %v's %s has timeoutSeconds %s, under %d",
						r.release.Name, o.Kind(), o.Name(), c["name"], kind, secs, min)
				}
			}
		}
	}
}

// checkHelperPodTimeout fails t unless the storage release gives the
// local-path provisioner's helper pods at least min seconds: with the
// provisioner's 120 s every attempt to make Harbor's database volume on a
// busy emulated worker failed (seen under QEMU).
func checkHelperPodTimeout(t *testing.T, rs []rendered, min int) {
	t.Helper()
	for _, r := range rs {
		for _, o := range r.objs {
			if o.Kind() != "ConfigMap" || o.Name() != "local-path-config" {
				continue
			}
			data, _ := o["data"].(map[string]any)
			var cfg struct {
				CmdTimeoutSeconds int `json:"cmdTimeoutSeconds"`
			}
			if err := json.Unmarshal([]byte(fmt.Sprint(data["config.json"])), &cfg); err != nil {
				t.Fatalf("release %s: local-path-config: config.json: %v", r.release.Name, err)
			}
			if cfg.CmdTimeoutSeconds < min {
				t.Errorf("release %s: local-path-config: cmdTimeoutSeconds %d, under %d", r.release.Name, cfg.CmdTimeoutSeconds, min)
			}
			return
		}
	}
	t.Error("no release renders local-path-config")
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
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
	_, rs, secrets := renderPlatform(t, "demo.yaml", string(site), nil)

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
	checkProbeTimeouts(t, *harbor, 10, "core", "jobservice")
	// Core and the job service spread away from the database.
	for _, o := range harbor.objs {
		if o.Kind() != "Deployment" || o.Name() != "cp-harbor-core" && o.Name() != "cp-harbor-jobservice" {
			continue
		}
		b, _ := json.Marshal(o["spec"])
		if !strings.Contains(string(b), `"podAntiAffinity":{"preferredDuringSchedulingIgnoredDuringExecution":[{"podAffinityTerm":{"labelSelector":{"matchLabels":{"app.kubernetes.io/component":"database"}}`) {
			t.Errorf("%s does not prefer a node without Harbor's database: %s", o.Name(), b)
		}
	}
	checkHelperPodTimeout(t, rs, 600)
	checkRendersSame(t, "demo.yaml", string(site), rs, secrets, nil)

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
