package ref

import "testing"

func TestNormalize(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"nginx", "docker.io/library/nginx:latest"},
		{"nginx:1.25", "docker.io/library/nginx:1.25"},
		{"index.docker.io/library/nginx:1.25", "docker.io/library/nginx:1.25"},
		{"hashicorp/vault:1.11.3", "docker.io/hashicorp/vault:1.11.3"},
		{"quay.io/calico/node:v3.24.5", "quay.io/calico/node:v3.24.5"},
		{"127.0.0.1:5000/bench/svc01:v1", "127.0.0.1:5000/bench/svc01:v1"},
		{"localhost:5000/a", "localhost:5000/a:latest"},
		{
			"registry.k8s.io/ingress-nginx/controller:v1.4.0@sha256:34ee929b111ffc7aa426ffd409af44da48e5a0eea1eb2207994d9e0c0882d143",
			"registry.k8s.io/ingress-nginx/controller:v1.4.0@sha256:34ee929b111ffc7aa426ffd409af44da48e5a0eea1eb2207994d9e0c0882d143",
		},
		{
			"busybox@sha256:34ee929b111ffc7aa426ffd409af44da48e5a0eea1eb2207994d9e0c0882d143",
			"docker.io/library/busybox@sha256:34ee929b111ffc7aa426ffd409af44da48e5a0eea1eb2207994d9e0c0882d143",
		},
	} {
		got, err := Normalize(tc.in)
		if err != nil {
			t.Errorf("Normalize(%q): %v", tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("Normalize(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestNormalizeRejects(t *testing.T) {
	for _, in := range []string{"", "UPPER/case", "nginx@sha256:abc", "a b", "nginx:tag with space", "https://example.com/x"} {
		if got, err := Normalize(in); err == nil {
			t.Errorf("Normalize(%q) = %q, want an error", in, got)
		}
	}
}
