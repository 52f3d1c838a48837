package v1alpha1_test

import (
	"errors"
	"strings"
	"testing"

	"kpaas.dev/appliance/api/osimage/v1alpha1"
)

const valid = `apiVersion: kpaas.dev/v1alpha1
kind: OSImage
metadata: {name: debian-12, version: 12.0.1}
distribution: debian
suite: bookworm
mirror: http://deb.debian.org/debian
kernel: linux-image-amd64
packages: [systemd-sysv, iptables]
`

func TestParseValid(t *testing.T) {
	o, err := v1alpha1.Parse("x.yaml", []byte(valid))
	if err != nil {
		t.Fatal(err)
	}
	if o.Architecture != "amd64" || len(o.Components) != 1 || o.Components[0] != "main" {
		t.Errorf("defaults not applied: %+v", o)
	}
	if got, want := o.Ref(), "kpaas.local/os/debian-12:12.0.1"; got != want {
		t.Errorf("Ref = %q, want %q", got, want)
	}
}

func TestParseInvalid(t *testing.T) {
	for _, tc := range []struct{ name, doc, want string }{
		{"unknown field", valid + "colour: blue\n", "unknown field"},
		{"duplicate key", valid + "suite: jammy\n", "already defined"},
		{"wrong type", strings.Replace(valid, "[systemd-sysv, iptables]", "{a: b}", 1), "invalid yaml"},
		{"empty", "", "empty definition"},
		{"two docs", valid + "---\n" + valid, "more than one"},
		{"bad values", `apiVersion: kpaas.dev/v1
kind: Bundle
metadata: {name: Debian_12, version: "a b"}
distribution: fedora
suite: Bookworm
mirror: ftp://x
architecture: arm64
kernel: ""
packages: [iptables, iptables, "Bad Name"]
sources: ["deb-src x"]
`, strings.Join([]string{
			`apiVersion: must be "kpaas.dev/v1alpha1", not "kpaas.dev/v1"`,
			`kind: must be "OSImage", not "Bundle"`,
			`metadata.name: "Debian_12" is not a name like debian-12`,
			`metadata.version: "a b" cannot be an image tag`,
			`distribution: must be debian or ubuntu, not "fedora"`,
			`suite: "Bookworm" is not a suite name like bookworm`,
			`mirror: "ftp://x" is not an http(s) URL`,
			`sources[0]: "deb-src x" is not an apt line`,
			`architecture: only amd64 is supported, not "arm64"`,
			`kernel: required`,
			`packages[1]: iptables is listed twice (first at packages[0])`,
			`packages[2]: "Bad Name" is not a Debian package name`,
		}, "\n")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v1alpha1.Parse("x.yaml", []byte(tc.doc))
			var verr *v1alpha1.ValidationError
			if !errors.As(err, &verr) {
				t.Fatalf("err = %v, want a *ValidationError", err)
			}
			for _, line := range strings.Split(tc.want, "\n") {
				if !strings.Contains(err.Error(), line) {
					t.Errorf("error\n%v\ndoes not contain %q", err, line)
				}
			}
		})
	}
}
