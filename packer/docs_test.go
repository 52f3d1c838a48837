package main

import (
	"os"
	"os/exec"
	"sort"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2/hcldec"

	builder "kpaas.dev/appliance/packer/builder/kpaas"
	"kpaas.dev/appliance/packer/datasource/bundle"
	provisioner "kpaas.dev/appliance/packer/provisioner/kpaas"
	"kpaas.dev/appliance/packer/version"
)

// TestDocsCoverConfig: every field a component's HCL2 spec accepts (the
// generated one, so a field added without docs fails here) is documented
// on its page in docs/, and the data source's every output.
func TestDocsCoverConfig(t *testing.T) {
	for _, c := range []struct {
		page string
		spec hcldec.ObjectSpec
	}{
		{"docs/builders/kpaas.mdx", new(builder.Builder).ConfigSpec()},
		{"docs/provisioners/kpaas.mdx", new(provisioner.Provisioner).ConfigSpec()},
		{"docs/datasources/bundle.mdx", new(bundle.Datasource).ConfigSpec()},
		{"docs/datasources/bundle.mdx", new(bundle.Datasource).OutputSpec()},
	} {
		b, err := os.ReadFile(c.page)
		if err != nil {
			t.Fatal(err)
		}
		var fields []string
		for f := range c.spec {
			if !strings.HasPrefix(f, "packer_") {
				fields = append(fields, f)
			}
		}
		sort.Strings(fields)
		for _, f := range fields {
			if !strings.Contains(string(b), "- `"+f+"` (") {
				t.Errorf("%s does not document %s (a line \"- `%s` (type) - …\")", c.page, f, f)
			}
		}
	}
}

// TestDescribe: the plugin speaks protocol x5.0 (Packer 1.9.5), says its
// version, and registers its components under the names the docs use:
// builder and provisioner kpaas (the default name), data source
// kpaas-bundle.
func TestDescribe(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the plugin")
	}
	bin := t.TempDir() + "/packer-plugin-kpaas"
	if b, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	b, err := exec.Command(bin, "describe").Output()
	if err != nil {
		t.Fatal(err)
	}
	out := string(b)
	for _, want := range []string{`"api_version":"x5.0"`, `"builders":["-packer-default-plugin-name-"]`,
		`"provisioners":["-packer-default-plugin-name-"]`, `"datasources":["bundle"]`, `"version":"` + version.Version + `"`} {
		if !strings.Contains(out, want) {
			t.Errorf("describe: %s lacks %s", out, want)
		}
	}
}
