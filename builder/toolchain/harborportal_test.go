package toolchain

import (
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestHarborArchiveTime: the portal's build stamp is the time of the
// archive's first entry (git archive: the commit's), not of its pax
// global header, which has none.
func TestHarborArchiveTime(t *testing.T) {
	ms, err := archiveTime(filepath.Join("..", "..", "toolchain", harborSource))
	if err != nil {
		t.Fatalf("Harbor's source archive: %v", err)
	}
	got := time.UnixMilli(ms).UTC()
	if got.Year() < 2025 || got.After(time.Now()) {
		t.Errorf("archive time %v (%d ms): want the v2.15.2 commit's time", got, ms)
	}
}

// TestHarborPortalFinish: the portal's web root is the Dockerfile's three
// COPY lines below html/ (Angular's dist/, swagger.json, the Swagger UI
// page), which the portal image's spec puts at nginx's web root, and the
// build tree is removed; a build without index.html fails.
func TestHarborPortalFinish(t *testing.T) {
	c := harborPortalComponent()
	portal := filepath.Join("harbor-"+HarborVersion, "src", "portal")
	write := func(out, name, data string) {
		p := filepath.Join(out, portal, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out := t.TempDir()
	write(out, "dist/index.html", "<harbor-app>")
	write(out, "dist/assets/app.js", "app")
	write(out, "swagger.json", `{"swagger":"2.0"}`)
	write(out, "app-swagger-ui/dist/swagger-ui-index.html", "swagger-ui")
	if err := c.Finish(out); err != nil {
		t.Fatal(err)
	}
	// What the portal image gets, through its own spec's extraction.
	var x imageExtract
	for _, spec := range harborImageSpecs(true) {
		if spec.Ref == HarborPortalImage {
			x = spec.Extract[0]
		}
	}
	entries, err := extractEntries(filepath.Join(out, x.Tar), x)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, e := range entries {
		got[e.Name] = string(e.Data)
	}
	const root = "/usr/share/nginx/html"
	want := map[string]string{
		root: "", root + "/assets": "", root + "/assets/app.js": "app", root + "/index.html": "<harbor-app>",
		root + "/swagger.json": `{"swagger":"2.0"}`, root + "/swagger-ui-index.html": "swagger-ui",
	}
	if !maps.Equal(got, want) {
		t.Errorf("the portal image's web root %v, want %v", got, want)
	}
	if ents, _ := os.ReadDir(out); len(ents) != 1 {
		t.Errorf("output folder holds %d entries, want only %s", len(ents), HarborPortalHTML)
	}

	bad := t.TempDir()
	write(bad, "dist/main.js", "x")
	write(bad, "swagger.json", "{}")
	write(bad, "app-swagger-ui/dist/swagger-ui-index.html", "x")
	if err := c.Finish(bad); err == nil || !strings.Contains(err.Error(), "index.html") {
		t.Errorf("no index.html: err = %v, want it named", err)
	}
}
