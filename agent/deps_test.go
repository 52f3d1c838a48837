package agent_test

import (
	"os/exec"
	"strings"
	"testing"

	"kpaas.dev/appliance/internal/testenv"
)

// forbidden are packages that fetch from the network. The agent runs on
// air-gapped nodes from the bundle alone: it must not even link them.
var forbidden = []string{
	"kpaas.dev/appliance/builder/",
	"github.com/google/go-containerregistry/pkg/v1/remote",
	"github.com/google/go-containerregistry/pkg/crane",
	"helm.sh/helm/v3/pkg/getter",
	"helm.sh/helm/v3/pkg/repo",
	"helm.sh/helm/v3/pkg/registry",
	"helm.sh/helm/v3/pkg/downloader",
	"oras.land/",
	"github.com/hashicorp/go-getter",
}

func TestAgentImportsNoNetworkFetching(t *testing.T) {
	testenv.RequireTool(t, "go")
	out, err := exec.Command("go", "list", "-deps", "kpaas.dev/appliance/agent/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps returned %d packages", len(deps))
	}
	for _, d := range deps {
		for _, f := range forbidden {
			if d == strings.TrimSuffix(f, "/") || strings.HasPrefix(d, f) {
				t.Errorf("the agent depends on %s (network-fetching code)", d)
			}
		}
	}
}
