package bake_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"kpaas.dev/appliance/builder/bake"
	"kpaas.dev/appliance/internal/bundle"
)

const platformManifest = `platform:
  facts:
    dbServer: 10.0.0.5
  secrets:
    - name: db-root
  releases:
    - name: db
      manifests: [manifests/db]
      substitute: {"{DB_SERVER}": "${fact:dbServer}"}
    - name: web
      chart: web
      dependsOn: [db]
      values: {password: "${secret:db-root}"}
      url: http://${fact:firstControlPlaneAddress}:30080
`

// A platform's manifests become a file artifact, their images join the
// completeness check, and the lock says what the agent installs.
func TestBakePlatform(t *testing.T) {
	tr := newTestRegistry(t)
	// test/extra:1 is named only by the db manifests.
	m := manifest(t, baseManifest+platformManifest)
	out := filepath.Join(t.TempDir(), "b")
	if _, err := bake.Bake(context.Background(), opts(tr, m, out)); err != nil {
		t.Fatal(err)
	}
	s, err := bundle.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	lock, err := s.ReadLock()
	if err != nil {
		t.Fatal(err)
	}
	p := lock.Platform
	if p == nil || len(p.Releases) != 2 || len(p.Secrets) != 1 || p.Secrets[0].Namespace != "kpaas-system" {
		t.Fatalf("lock platform: %+v", p)
	}
	db, web := p.Releases[0], p.Releases[1]
	if !strings.HasPrefix(db.Manifests, "kpaas.local/manifests/db:") || db.Namespace != "db" || strings.Join(db.Images, ",") != "docker.io/test/extra:1" {
		t.Errorf("db release: %+v", db)
	}
	if web.Chart != "kpaas.local/charts/web:1.0.0" || web.Namespace != "web" || web.Timeout != "10m" || web.DependsOn[0] != "db" {
		t.Errorf("web release: %+v", web)
	}
	var found, extra bool
	for _, a := range lock.Artifacts {
		found = found || a.Ref == db.Manifests
		extra = extra || a.Ref == "docker.io/test/extra:1"
	}
	if !found || !extra {
		t.Errorf("artifacts: manifests %v, image of the manifests %v", found, extra)
	}
	// An image only the manifests name, missing: the bake says which release needs it.
	m = manifest(t, baseManifest+strings.Replace(platformManifest, "manifests: [manifests/db]", "manifests: [manifests/db, absent.yaml]", 1))
	writeFile(t, filepath.Join(filepath.Dir(m), "absent.yaml"), "kind: Pod\napiVersion: v1\nmetadata: {name: x}\nspec: {containers: [{name: x, image: docker.io/test/absent:9}]}\n")
	_, err = bake.Bake(context.Background(), opts(tr, m, filepath.Join(t.TempDir(), "c")))
	if err == nil || !strings.Contains(err.Error(), "docker.io/test/absent:9 (needed by release db)") {
		t.Fatalf("err = %v", err)
	}
}

func writeFile(t *testing.T, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// A kustomize release is rendered at bake time: its images (after the
// kustomization's image rewrites) join the bundle, its output is the
// manifests artifact.
func TestBakePlatformKustomize(t *testing.T) {
	tr := newTestRegistry(t)
	m := manifest(t, baseManifest+`platform:
  releases:
    - name: tools
      kustomize: kustomize/overlay
`)
	out := filepath.Join(t.TempDir(), "b")
	if _, err := bake.Bake(context.Background(), opts(tr, m, out)); err != nil {
		t.Fatal(err)
	}
	s, _ := bundle.Open(out)
	lock, err := s.ReadLock()
	if err != nil {
		t.Fatal(err)
	}
	r := lock.Platform.Releases[0]
	if !strings.HasPrefix(r.Manifests, "kpaas.local/manifests/tools:") || strings.Join(r.Images, ",") != "docker.io/test/sidecar:1" {
		t.Errorf("release: %+v", r)
	}
	var found bool
	for _, a := range lock.Artifacts {
		found = found || a.Ref == "docker.io/test/sidecar:1"
	}
	if !found {
		t.Error("the kustomization's image is not in the bundle")
	}
}

// A chart that requires a value only its platform release gives (a
// password from the site's secrets) still renders at bake time, with a
// placeholder: the bake finds its images and keeps no placeholder.
func TestBakeRendersWithReleaseValues(t *testing.T) {
	tr := newTestRegistry(t)
	m := manifest(t, baseManifest+platformManifest)
	writeFile(t, filepath.Join(filepath.Dir(m), "charts/web/templates/secret.yaml"),
		"apiVersion: v1\nkind: Secret\nmetadata: {name: web}\nstringData:\n  password: {{ required \"password is required\" .Values.password | quote }}\n")
	out := filepath.Join(t.TempDir(), "b")
	if _, err := bake.Bake(context.Background(), opts(tr, m, out)); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(out, "kpaas-lock.json"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), "kpaas-bake-") {
		t.Errorf("the lock keeps a render placeholder:\n%s", data)
	}
	// Without the release, the chart's own values do not render.
	m = manifest(t, baseManifest)
	writeFile(t, filepath.Join(filepath.Dir(m), "charts/web/templates/secret.yaml"),
		"apiVersion: v1\nkind: Secret\nmetadata: {name: web}\nstringData:\n  password: {{ required \"password is required\" .Values.password | quote }}\n")
	if _, err := bake.Bake(context.Background(), opts(tr, m, filepath.Join(t.TempDir(), "c"))); err == nil || !strings.Contains(err.Error(), "password is required") {
		t.Errorf("err = %v", err)
	}
}
