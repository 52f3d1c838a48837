package bundle

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/packer-plugin-sdk/hcl2helper"
	"github.com/zclconf/go-cty/cty"

	"kpaas.dev/appliance/packer/internal/fixture"
)

// TestExecute reads the lock of a folder and of an export (without
// importing it) and gives the same values.
func TestExecute(t *testing.T) {
	fx := fixture.Write(t, fixture.Options{})
	for name, src := range map[string]string{"folder": fx.Dir, "export": fx.Export(t)} {
		t.Run(name, func(t *testing.T) {
			var d Datasource
			if err := d.Configure(map[string]interface{}{"bundle": src}); err != nil {
				t.Fatal(err)
			}
			v, err := d.Execute()
			if err != nil {
				t.Fatal(err)
			}
			m := v.AsValueMap()
			for k, want := range map[string]cty.Value{
				"name":               cty.StringVal(fixture.Name),
				"version":            cty.StringVal(fixture.Version),
				"kubernetes_version": cty.StringVal("v1.35.4"),
				"os_image":           cty.StringVal(fixture.OSRef),
				"artifact_count":     cty.NumberIntVal(2),
				"platforms":          cty.ListVal([]cty.Value{cty.StringVal("linux/amd64")}),
			} {
				if !m[k].RawEquals(want) {
					t.Errorf("%s = %#v, want %#v", k, m[k], want)
				}
			}
			if !strings.HasPrefix(m["os_digest"].AsString(), "sha256:") {
				t.Errorf("os_digest %v", m["os_digest"])
			}
		})
	}
}

func TestConfigureErrors(t *testing.T) {
	var d Datasource
	if err := d.Configure(map[string]interface{}{}); err == nil || !strings.Contains(err.Error(), "bundle: required") {
		t.Errorf("no bundle: %v", err)
	}
	missing := filepath.Join(t.TempDir(), "missing.tar")
	if err := d.Configure(map[string]interface{}{"bundle": missing}); err == nil || !strings.Contains(err.Error(), "bundle: stat "+missing) {
		t.Errorf("a missing bundle: %v", err)
	}
	if _, err := (&Datasource{config: Config{Bundle: "/etc/hostname"}}).Execute(); err == nil || !strings.Contains(err.Error(), "not an exported bundle") {
		t.Errorf("not a bundle: %v", err)
	}
}

// TestOutputSpec: the output spec and Describe agree (every field has a
// value of its type).
func TestOutputSpec(t *testing.T) {
	var d Datasource
	v := hcl2helper.HCL2ValueFromConfig(Output{}, d.OutputSpec())
	if len(v.AsValueMap()) != 8 {
		t.Errorf("output has %d fields: %#v", len(v.AsValueMap()), v)
	}
}
