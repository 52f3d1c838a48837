package cli

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const platformBundleYAML = `apiVersion: kpaas.dev/v1alpha1
kind: Bundle
metadata: {name: p, version: "1"}
kubernetes: {version: v1.35.4}
platform:
  secrets:
    - name: harbor-admin
      namespace: harbor
      description: Harbor's admin password
    - name: mariadb-root
`

// init --bundle makes the platform's secrets; secrets lists them without
// their content, --show prints one; only the first control plane's
// config disk carries them.
func TestClusterPlatformSecrets(t *testing.T) {
	bf := filepath.Join(t.TempDir(), "bundle.yaml")
	os.WriteFile(bf, []byte(platformBundleYAML), 0o644)
	dir := filepath.Join(t.TempDir(), "site")
	out, err := cli(t, append([]string{"cluster", "init", "-o", dir, "--bundle", bf}, siteFlags...)...)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !strings.Contains(out, filepath.Join(dir, "secrets", "platform", "harbor-admin")+" (0600)") {
		t.Errorf("init output:\n%s", out)
	}
	pw, err := cli(t, "cluster", "secrets", dir, "--show", "harbor-admin")
	pw = strings.TrimSpace(pw)
	if err != nil || len(pw) != 24 {
		t.Fatalf("--show: %q %v", pw, err)
	}
	list, err := cli(t, "cluster", "secrets", dir, "--bundle", bf)
	if err != nil || strings.Contains(list, pw) || !strings.Contains(list, "harbor/harbor-admin") || !strings.Contains(list, "Harbor's admin password") {
		t.Errorf("list (%v):\n%s", err, list)
	}
	if _, err := cli(t, "cluster", "secrets", dir, "--show", "nothing"); err == nil {
		t.Error("--show of a missing secret succeeded")
	}

	needTools(t, "fsck.vfat", "mdir", "mtype", "mcopy")
	for node, want := range map[string]bool{"cp1": true, "w1": false} {
		img := filepath.Join(t.TempDir(), node+".img")
		if out, err := cli(t, "cluster", "config-disk", dir, "--node", node, "-o", img); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		files := configFS(t, img)
		var names []string
		for n := range files {
			names = append(names, n)
		}
		if got := slices.Contains(names, "secrets/platform/harbor-admin"); got != want {
			t.Errorf("%s carries the platform secrets: %v (%v)", node, got, names)
		}
		if want && strings.TrimSpace(string(files["secrets/platform/harbor-admin"])) != pw {
			t.Errorf("%s: the platform secret differs", node)
		}
	}
}
