package v1alpha1

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// valid returns a small bundle that passes Validate.
func valid() *Bundle {
	b := &Bundle{
		APIVersion: APIVersion,
		Kind:       Kind,
		Metadata:   Metadata{Name: "demo", Version: "1.0.0"},
		Kubernetes: Kubernetes{Version: "v1.35.4"},
		OS:         &OS{Image: "ghcr.io/kpaas/os:24.04"},
		Images:     []Image{{Ref: "nginx:1.27"}, {Ref: "quay.io/calico/node:v3.29.0", Platforms: []string{"linux/arm64"}}},
		Charts: []Chart{
			{Name: "vault", Source: "https://helm.releases.hashicorp.com", Version: "0.22.0"},
			{Name: "local", Source: "charts/local"},
		},
		Files: []File{{
			Name:   "kubeadm",
			Source: "https://dl.k8s.io/kubeadm",
			SHA256: strings.Repeat("ab", 32),
			Mode:   "0755",
			Target: "/usr/local/bin/kubeadm",
		}},
		Exclude: []Exclude{{Image: "nvcr.io/*", Reason: "optional"}},
	}
	b.Default()
	return b
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(b *Bundle)
		want   string // the error, one problem a line; "" for none
	}{
		{"valid", func(*Bundle) {}, ""},
		{"apiVersion", func(b *Bundle) { b.APIVersion = "v1" }, `apiVersion: must be "kpaas.dev/v1alpha1", not "v1"`},
		{"apiVersion missing", func(b *Bundle) { b.APIVersion = "" }, `apiVersion: required`},
		{"kind", func(b *Bundle) { b.Kind = "Pod" }, `kind: must be "Bundle", not "Pod"`},
		{"name missing", func(b *Bundle) { b.Metadata.Name = "" }, `metadata.name: required`},
		{"name label", func(b *Bundle) { b.Metadata.Name = "-x" }, `metadata.name: "-x" is not a DNS-1123 label (lower case letters, digits and '-', starting and ending with a letter or digit)`},
		{"name long", func(b *Bundle) { b.Metadata.Name = strings.Repeat("a", 64) }, `metadata.name: "` + strings.Repeat("a", 64) + `" is longer than 63 characters`},
		{"version missing", func(b *Bundle) { b.Metadata.Version = "" }, `metadata.version: required`},
		{"kubernetes missing", func(b *Bundle) { b.Kubernetes.Version = "" }, `kubernetes.version: required`},
		{"kubernetes no v", func(b *Bundle) { b.Kubernetes.Version = "1.35.4" }, `kubernetes.version: "1.35.4" is not a version like v1.35.4`},
		{"kubernetes short", func(b *Bundle) { b.Kubernetes.Version = "v1.35" }, `kubernetes.version: "v1.35" is not a version like v1.35.4`},
		{"kubernetes prerelease", func(b *Bundle) { b.Kubernetes.Version = "v1.36.0-rc.0" }, ""},
		{"platform", func(b *Bundle) { b.Platforms = []string{"amd64"} }, `platforms[0]: "amd64" is not a platform like linux/amd64 or linux/arm/v7`},
		{"platform variant", func(b *Bundle) { b.Platforms = []string{"linux/arm/v7"} }, ""},
		{"platform duplicate", func(b *Bundle) { b.Platforms = []string{"linux/amd64", "linux/amd64"} }, `platforms[1]: duplicate platform "linux/amd64"`},
		{"os image missing", func(b *Bundle) { b.OS.Image = "" }, `os.image: required`},
		{"os image invalid", func(b *Bundle) { b.OS.Image = "a b" }, `os.image: invalid image reference "a b": could not parse reference: a b`},
		{"image ref missing", func(b *Bundle) { b.Images[0].Ref = "" }, `images[0].ref: required`},
		{"image ref invalid", func(b *Bundle) { b.Images[0].Ref = "UPPER/x" }, `images[0].ref: invalid image reference "UPPER/x": could not parse reference: UPPER/x`},
		{"image platform", func(b *Bundle) { b.Images[1].Platforms = []string{"arm64"} }, `images[1].platforms[0]: "arm64" is not a platform like linux/amd64 or linux/arm/v7`},
		{"image duplicate", func(b *Bundle) { b.Images[1].Ref = "docker.io/library/nginx:1.27" }, `images[1].ref: duplicate image "docker.io/library/nginx:1.27" (same as images[0])`},
		{"image same repo other tag", func(b *Bundle) { b.Images[1].Ref = "nginx:1.28" }, ""},
		{"chart name", func(b *Bundle) { b.Charts[1].Name = ""; b.Charts[1].Release = "x" }, `charts[1].name: required`},
		{"chart source", func(b *Bundle) { b.Charts[1].Source = "" }, `charts[1].source: required`},
		{"chart repo version", func(b *Bundle) { b.Charts[0].Version = "" }, `charts[0].version: required`},
		{"chart oci version", func(b *Bundle) { b.Charts[0].Source = "oci://ghcr.io/x/vault"; b.Charts[0].Version = "" }, `charts[0].version: required`},
		{"chart oci tag", func(b *Bundle) { b.Charts[0].Source = "oci://ghcr.io/x/vault:0.22.0" }, `charts[0].source: "oci://ghcr.io/x/vault:0.22.0" is not an oci://host/path/name chart reference without tag: repository can only contain the characters ` + "`abcdefghijklmnopqrstuvwxyz0123456789_-./`" + `: x/vault:0.22.0`},
		{"chart url", func(b *Bundle) { b.Charts[0].Source = "https://" }, `charts[0].source: "https://" is not a valid repository URL`},
		{"chart local no version", func(b *Bundle) { b.Charts[1].Version = "" }, ""},
		{"chart release", func(b *Bundle) { b.Charts[0].Release = "Vault" }, `charts[0].release: "Vault" is not a DNS-1123 label (lower case letters, digits and '-', starting and ending with a letter or digit)`},
		{"chart release long", func(b *Bundle) { b.Charts[0].Release = strings.Repeat("a", 54) }, `charts[0].release: "` + strings.Repeat("a", 54) + `" is longer than 53 characters`},
		{"chart release missing", func(b *Bundle) { b.Charts[0].Release = "" }, `charts[0].release: required`},
		{"chart namespace", func(b *Bundle) { b.Charts[0].Namespace = "kube_system" }, `charts[0].namespace: "kube_system" is not a DNS-1123 label (lower case letters, digits and '-', starting and ending with a letter or digit)`},
		{"chart same release other namespace", func(b *Bundle) { b.Charts[1].Release = "vault" }, ""},
		{"chart duplicate release namespace", func(b *Bundle) { b.Charts[1].Release, b.Charts[1].Namespace = "vault", "vault" }, `charts[1].release: duplicate release "vault" in namespace "vault" (same as charts[0])`},
		{"chart values file", func(b *Bundle) { b.Charts[0].ValuesFiles = []string{""} }, `charts[0].valuesFiles[0]: required`},
		{"file name", func(b *Bundle) { b.Files[0].Name = "" }, `files[0].name: required`},
		{"file duplicate", func(b *Bundle) { b.Files = append(b.Files, b.Files[0]) }, `files[1].name: duplicate file name "kubeadm" (same as files[0])`},
		{"file version tag", func(b *Bundle) { b.Files[0].Version = "1.0+x" }, `files[0].version: "1.0+x" is not usable as a tag (letters, digits, '_', '.', '-'; at most 128)`},
		{"file source", func(b *Bundle) { b.Files[0].Source = "" }, `files[0].source: required`},
		{"file sha256 missing", func(b *Bundle) { b.Files[0].SHA256 = "" }, `files[0].sha256: required`},
		{"file sha256 upper", func(b *Bundle) { b.Files[0].SHA256 = strings.Repeat("AB", 32) }, `files[0].sha256: must be 64 lower-case hex digits`},
		{"file sha256 short", func(b *Bundle) { b.Files[0].SHA256 = "abc" }, `files[0].sha256: must be 64 lower-case hex digits`},
		{"file mode", func(b *Bundle) { b.Files[0].Mode = "rwx" }, `files[0].mode: "rwx" is not an octal file mode like "0755"`},
		{"file mode short", func(b *Bundle) { b.Files[0].Mode = "755" }, ""},
		{"file mode missing", func(b *Bundle) { b.Files[0].Mode = "" }, `files[0].mode: required`},
		{"file target", func(b *Bundle) { b.Files[0].Target = "bin/kubeadm" }, `files[0].target: "bin/kubeadm" is not an absolute path`},
		{"exclude image", func(b *Bundle) { b.Exclude[0].Image = "" }, `exclude[0].image: required`},
		{"exclude pattern", func(b *Bundle) { b.Exclude[0].Image = "x/[" }, `exclude[0].image: invalid pattern "x/[": syntax error in pattern`},
		{"exclude reference", func(b *Bundle) { b.Exclude[0].Image = "a b" }, `exclude[0].image: invalid image reference "a b": could not parse reference: a b`},
		{"exclude reason", func(b *Bundle) { b.Exclude[0].Reason = "" }, `exclude[0].reason: required`},
		{"several", func(b *Bundle) { b.Kind = ""; b.Files[0].Mode = "9" }, "kind: required\nfiles[0].mode: \"9\" is not an octal file mode like \"0755\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := valid()
			tt.change(b)
			err := b.Validate()
			got := ""
			if err != nil {
				var verr *ValidationError
				if !errors.As(err, &verr) {
					t.Fatalf("got %T, want *ValidationError", err)
				}
				got = err.Error()
			}
			if got != tt.want {
				t.Errorf("Validate() =\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestDefault(t *testing.T) {
	b := &Bundle{
		Charts: []Chart{{Name: "a"}, {Name: "b", Release: "r"}, {Name: "c", Release: "r", Namespace: "ns"}},
		Files:  []File{{Name: "f"}, {Name: "g", Mode: "0755"}},
	}
	b.Default()
	b.Default() // idempotent
	want := &Bundle{
		Platforms: []string{"linux/amd64"},
		Charts: []Chart{
			{Name: "a", Release: "a", Namespace: "a"},
			{Name: "b", Release: "r", Namespace: "r"},
			{Name: "c", Release: "r", Namespace: "ns"},
		},
		Files: []File{{Name: "f", Mode: "0644"}, {Name: "g", Mode: "0755"}},
	}
	if !reflect.DeepEqual(b, want) {
		t.Errorf("Default() =\n%+v\nwant\n%+v", b, want)
	}
}
