package kubetest

import "testing"

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{
		"/tmp/kubetest-1/kubelet":      "/tmp/kubetest-1/kubelet",
		`/tmp/a\040b`:                  "/tmp/a b",
		`/tmp/tab\011and\134backslash`: "/tmp/tab\tand\\backslash",
		`/tmp/short\04`:                `/tmp/short\04`,
		`/tmp/not\999octal`:            `/tmp/not\999octal`,
	} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescapeMountinfo(%q) = %q, want %q", in, got, want)
		}
	}
}
