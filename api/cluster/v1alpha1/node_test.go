package v1alpha1

import (
	"strings"
	"testing"
)

func TestFindNode(t *testing.T) {
	c, err := ParseFile("testdata/site.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name              string
		macs              []string
		hostname, cmdline string
		want              string // node name, or an error substring after "!"
	}{
		{"mac", []string{"52:54:00:00:00:03"}, "", "", "w2"},
		{"mac upper case", []string{"52:54:00:00:00:03"}, "", "", "w2"},
		{"second mac of a node", []string{"aa:bb:cc:dd:ee:ff", "52:54:00:00:01:02"}, "", "", "w1"},
		{"mac wins over hostname", []string{"52:54:00:00:00:03"}, "cp1", "w1", "w2"},
		{"hostname wins over cmdline", []string{"aa:bb:cc:dd:ee:ff"}, "cp1", "w1", "cp1"},
		{"cmdline", []string{"aa:bb:cc:dd:ee:ff"}, "debian", "w1", "w1"},
		{"macs of two nodes", []string{"52:54:00:00:00:01", "52:54:00:00:00:02"}, "", "", "!match two nodes, cp1 and w1"},
		{"none", []string{"AA:BB:CC:DD:EE:FF", "aa:bb:cc:dd:ee:00"}, "localhost", "w9", `!MACs tried: aa:bb:cc:dd:ee:ff, aa:bb:cc:dd:ee:00; hostname "localhost"; kpaas.node="w9"`},
		{"no macs", nil, "", "", "!MACs tried: none"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.name == "mac upper case" {
				tt.macs = []string{strings.ToUpper(tt.macs[0])}
			}
			n, err := c.FindNode(tt.macs, tt.hostname, tt.cmdline)
			if want, ok := strings.CutPrefix(tt.want, "!"); ok {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("got %v, %v; want an error with %q", n, err, want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if n.Name != tt.want {
				t.Errorf("got %s, want %s", n.Name, tt.want)
			}
			if n != &c.Nodes[indexOf(c, n.Name)] {
				t.Error("FindNode returned a copy, not the entry")
			}
		})
	}
}

func indexOf(c *Cluster, name string) int {
	for i, n := range c.Nodes {
		if n.Name == name {
			return i
		}
	}
	return -1
}

func TestFirstControlPlane(t *testing.T) {
	c := &Cluster{Nodes: []Node{{Name: "w", Role: RoleWorker}, {Name: "cp2", Role: RoleControlPlane}, {Name: "cp3", Role: RoleControlPlane}}}
	if n := c.FirstControlPlane(); n == nil || n.Name != "cp2" {
		t.Errorf("got %v, want cp2", n)
	}
	if n := (&Cluster{}).FirstControlPlane(); n != nil {
		t.Errorf("got %v, want nil", n)
	}
}
