package v1alpha1

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse checks that Parse never panics, that every failure is a
// *ValidationError with at least one problem, and that what it accepts
// validates and names a first control plane.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*.yaml")
	for _, file := range seeds {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(base))
	f.Add([]byte("a: &a [*a, *a]\nb: *a\n"))
	f.Add([]byte("nodes:\n- <<: [*x]\n"))
	f.Add([]byte("controlPlaneEndpoint: {port: 99999999999999999999999}\n"))
	f.Add([]byte("seed: {port: !!str 5000}\n---\nkind: Cluster\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.yaml", data)
		if err == nil {
			if c == nil {
				t.Fatal("nil cluster without error")
			}
			if err := c.Validate(); err != nil {
				t.Fatalf("Parse accepted what Validate rejects: %v", err)
			}
			if c.FirstControlPlane() == nil {
				t.Fatal("accepted without a control plane")
			}
			return
		}
		var verr *ValidationError
		if !errors.As(err, &verr) || len(verr.Problems) == 0 {
			t.Fatalf("got %T %v, want a *ValidationError with problems", err, err)
		}
	})
}
