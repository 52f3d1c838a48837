package v1alpha1

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse checks that Parse never panics and that every failure is a
// *ValidationError with at least one problem.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*/*.yaml")
	bundles, _ := filepath.Glob("../../../bundles/*.yaml")
	for _, file := range append(seeds, bundles...) {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("a: &a [*a, *a]\nb: *a\n"))
	f.Add([]byte("charts:\n- values: {<<: [*x]}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := Parse("fuzz.yaml", data)
		if err == nil {
			if b == nil {
				t.Fatal("nil bundle without error")
			}
			return
		}
		var verr *ValidationError
		if !errors.As(err, &verr) || len(verr.Problems) == 0 {
			t.Fatalf("got %T %v, want a *ValidationError with problems", err, err)
		}
	})
}
