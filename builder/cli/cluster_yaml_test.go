package cli

import (
	"os/exec"
	"reflect"
	"strings"
	"testing"

	"kpaas.dev/appliance/api/cluster/v1alpha1"
)

// TestRenderCluster: what init writes reads back the same, also for names
// a YAML reader would take for booleans, nulls or numbers.
func TestRenderCluster(t *testing.T) {
	c := &v1alpha1.Cluster{
		APIVersion: v1alpha1.APIVersion, Kind: v1alpha1.Kind,
		Metadata:             v1alpha1.Metadata{Name: "null"},
		ControlPlaneEndpoint: v1alpha1.Endpoint{Host: "api.on.example", Port: 443},
		Nodes: []v1alpha1.Node{
			{Name: "yes", Role: v1alpha1.RoleControlPlane, MACs: []string{"52:54:00:00:00:01", "00:00:00:00:00:60"}, Address: "10.0.0.11/24", Gateway: "10.0.0.1", DNS: []string{"10.0.0.1"}, NTP: []string{"off", "1e3"}},
			{Name: "0123", Role: v1alpha1.RoleWorker, Address: "10.0.0.12/24"},
			{Name: "1e3", Role: v1alpha1.RoleWorker, Address: "10.0.0.13/24"},
		},
		Platform: &v1alpha1.Platform{Storage: v1alpha1.StorageNFS, NFSServer: "nfs"},
	}
	c.Default()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	data := renderCluster(c)
	back, err := v1alpha1.Parse("c.yaml", data)
	if err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	if !reflect.DeepEqual(back, c) {
		t.Errorf("read back\n%+v\nwant\n%+v", back, c)
	}
	if !strings.Contains(string(data), `macs: ["52:54:00:00:00:01", "00:00:00:00:00:60"]`) {
		t.Errorf("MACs not quoted:\n%s", data)
	}
	// A YAML 1.1 reader (PyYAML, as Ansible uses) reads the same strings.
	if _, err := exec.LookPath("python3"); err != nil {
		return
	}
	cmd := exec.Command("python3", "-c", `import sys, yaml, json; print(json.dumps(yaml.safe_load(sys.stdin)))`)
	cmd.Stdin = strings.NewReader(string(data))
	out, err := cmd.Output()
	if err != nil {
		t.Skipf("python3 yaml: %v", err)
	}
	for _, want := range []string{`"name": "null"`, `"name": "yes"`, `"name": "0123"`, `"name": "1e3"`, `"52:54:00:00:00:01"`, `["off", "1e3"]`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("PyYAML read %s, want %s in it", out, want)
		}
	}
}
