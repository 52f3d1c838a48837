package v1alpha1

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"kpaas.dev/appliance/internal/testenv"
)

var update = flag.Bool("update", false, "rewrite the testdata/invalid/*.golden files")

func TestParseValid(t *testing.T) {
	files, _ := filepath.Glob("testdata/valid/*.yaml")
	if len(files) == 0 {
		t.Fatal("no testdata/valid/*.yaml")
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			if _, err := Load(file); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestParseInvalid parses each testdata/invalid/NAME.yaml and compares the
// error, one line per problem, with NAME.golden. Run with -update to
// rewrite the goldens after a deliberate change, then read the diff.
func TestParseInvalid(t *testing.T) {
	files, _ := filepath.Glob("testdata/invalid/*.yaml")
	if len(files) == 0 {
		t.Fatal("no testdata/invalid/*.yaml")
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			b, err := Load(file)
			if err == nil {
				t.Fatalf("Load succeeded: %+v", b)
			}
			var verr *ValidationError
			if !errors.As(err, &verr) {
				t.Fatalf("got %T, want *ValidationError: %v", err, err)
			}
			for _, p := range verr.Problems {
				if p.Line == 0 {
					t.Errorf("problem without position: %v", p)
				}
			}
			got := err.Error() + "\n"
			golden := strings.TrimSuffix(file, ".yaml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("problems differ from %s\ngot:\n%s\nwant:\n%s", golden, got, want)
			}
		})
	}
}

func TestParseFull(t *testing.T) {
	b, err := Load("testdata/valid/full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := b.Images, []Image{
		{Ref: "nginx:1.27"},
		{Ref: "quay.io/calico/node:v3.29.0", Platforms: []string{"linux/amd64"}},
		{Ref: "registry.k8s.io/ingress-nginx/controller:v1.4.0@sha256:34ee929b111ffc7aa426ffd409af44da48e5a0eea1eb2207994d9e0c0882d143"},
	}; !reflect.DeepEqual(got, want) {
		t.Errorf("images:\ngot  %+v\nwant %+v", got, want)
	}
	vault := map[string]any{
		"server": map[string]any{
			"standalone": map[string]any{"enabled": true},
			"replicas":   int64(1),
			"ratio":      0.5,
			"tags":       []any{"a", "b", int64(3), true, nil},
		},
		"injector": map[string]any{"enabled": false},
	}
	if got := b.Charts[0].Values; !reflect.DeepEqual(got, vault) {
		t.Errorf("charts[0].values:\ngot  %#v\nwant %#v", got, vault)
	}
	// The merge key brings in charts[0]'s values; the explicit key wins.
	vault["injector"] = map[string]any{"enabled": true}
	if got := b.Charts[1].Values; !reflect.DeepEqual(got, vault) {
		t.Errorf("charts[1].values:\ngot  %#v\nwant %#v", got, vault)
	}
	if c := b.Charts[2]; c.Release != "local" || c.Namespace != "local" {
		t.Errorf("charts[2] defaults: release %q namespace %q", c.Release, c.Namespace)
	}
	if got := b.Files[1].Mode; got != DefaultFileMode {
		t.Errorf("files[1].mode = %q, want the default", got)
	}
	if got := b.Metadata.Description; got != "A bundle that uses every field.\n" {
		t.Errorf("description = %q", got)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "absent.yaml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("got %v, want a wrapped os.ErrNotExist", err)
	}
}

// TestBundles parses every manifest shipped in bundles/.
func TestBundles(t *testing.T) {
	files, _ := filepath.Glob("../../../bundles/*.yaml")
	if len(files) == 0 {
		testenv.SkipOrFail(t, "no bundles/*.yaml")
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			if _, err := Load(file); err != nil {
				t.Fatal(err)
			}
		})
	}
}
