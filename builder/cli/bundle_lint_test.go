package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"kpaas.dev/appliance/internal/testenv"
)

const lintGood = `apiVersion: kpaas.dev/v1alpha1
kind: Bundle
metadata: {name: good, version: "1"}
kubernetes: {version: v1.35.4}
images: [nginx:1.27, registry.k8s.io/pause:3.10]
charts:
  - {name: vault, source: https://helm.releases.hashicorp.com, version: 0.22.0}
`

const lintBad = `apiVersion: kpaas.dev/v1alpha1
kind: Bundle
metadata: {name: bad, version: "1"}
kubernetes: {version: v1.35.4}
charts:
  - name: vault
    source: https://helm.releases.hashicorp.com
    vesion: 0.22.0
`

func writeManifests(t *testing.T) (good, bad string) {
	t.Helper()
	dir := t.TempDir()
	good, bad = filepath.Join(dir, "good.yaml"), filepath.Join(dir, "bad.yaml")
	for name, data := range map[string]string{good: lintGood, bad: lintBad} {
		if err := os.WriteFile(name, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return good, bad
}

func runLint(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := Run(context.Background(), append([]string{"bundle", "lint"}, args...), strings.NewReader(""), &stdout, &stderr)
	return stdout.String(), err
}

func TestBundleLint(t *testing.T) {
	good, bad := writeManifests(t)

	out, err := runLint(t, good)
	if err != nil {
		t.Fatalf("lint %s: %v", good, err)
	}
	if want := good + ": ok (2 images, 1 charts, 0 files)\n"; out != want {
		t.Errorf("got %q, want %q", out, want)
	}

	out, err = runLint(t, good, bad)
	if err == nil {
		t.Fatal("lint of a bad manifest succeeded")
	}
	want := good + ": ok (2 images, 1 charts, 0 files)\n" +
		bad + ":6:5: charts[0].version: required\n" +
		bad + ":8:5: charts[0].vesion: unknown field\n"
	if out != want {
		t.Errorf("got\n%s\nwant\n%s", out, want)
	}
}

func TestBundleLintJSON(t *testing.T) {
	good, bad := writeManifests(t)
	missing := filepath.Join(t.TempDir(), "missing.yaml")
	out, err := runLint(t, "--json", good, bad, missing)
	if err == nil {
		t.Fatal("lint of a bad manifest succeeded")
	}
	var got []lintResult
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v in %s", err, out)
	}
	if len(got) != 3 {
		t.Fatalf("got %d results, want 3: %s", len(got), out)
	}
	if !got[0].OK || len(got[0].Problems) != 0 {
		t.Errorf("good: %+v", got[0])
	}
	if got[1].OK || len(got[1].Problems) != 2 {
		t.Fatalf("bad: %+v", got[1])
	}
	if p := got[1].Problems[0]; p.Path != "charts[0].version" || p.Line != 6 || p.Column != 5 || p.Message != "required" {
		t.Errorf("bad problem: %+v", p)
	}
	if got[2].OK || len(got[2].Problems) != 1 || !strings.Contains(got[2].Problems[0].Message, "no such file") {
		t.Errorf("missing: %+v", got[2])
	}
	for _, key := range []string{`"file"`, `"ok"`, `"problems"`, `"path"`, `"line"`, `"column"`, `"message"`} {
		if !strings.Contains(out, key) {
			t.Errorf("JSON lacks %s", key)
		}
	}
}

func TestBundleLintShippedBundles(t *testing.T) {
	files, _ := filepath.Glob("../../bundles/*.yaml")
	if len(files) == 0 {
		testenv.SkipOrFail(t, "no bundles/*.yaml")
	}
	if out, err := runLint(t, files...); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}
