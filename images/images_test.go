package images_test

import (
	"testing"

	"kpaas.dev/appliance/images"
)

// Every shipped definition parses strictly and names itself after its file.
func TestDefinitions(t *testing.T) {
	names := images.Names()
	if len(names) < 2 {
		t.Fatalf("definitions: %v", names)
	}
	for _, n := range names {
		o, err := images.Get(n)
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		if o.Metadata.Name != n {
			t.Errorf("%s.yaml is called %q", n, o.Metadata.Name)
		}
		for _, want := range []string{"systemd-sysv", "iptables", "conntrack", "socat", "ethtool", "iproute2", "kmod", "util-linux", "e2fsprogs", "ca-certificates", "systemd-timesyncd", "systemd-boot-efi", "isolinux", "syslinux-common"} {
			found := false
			for _, p := range o.Packages {
				found = found || p == want
			}
			if !found {
				t.Errorf("%s: package %s missing", n, want)
			}
		}
	}
	if _, err := images.Get(images.Default); err != nil {
		t.Fatal(err)
	}
	if _, err := images.Get("nope"); err == nil {
		t.Fatal("unknown definition accepted")
	}
}
