package seed

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"kpaas.dev/appliance/internal/testenv"
)

// TestSkopeoPull pulls from the seed with skopeo, an independent client
// (containers/image), into an OCI layout, and compares digests with the
// bundle. --preserve-digests makes skopeo fail rather than convert.
func TestSkopeoPull(t *testing.T) {
	bin := testenv.RequireTool(t, "skopeo")
	f := newFixture(t)
	host, _ := f.serve(t)
	for _, tc := range []struct {
		ref  string
		all  bool
		want v1.Hash
	}{
		{refNginx, true, f.nginx.Digest},
		{refPause, false, f.pause.Digest},
		{"registry.k8s.io/pause@" + f.pause.Digest.String(), false, f.pause.Digest},
	} {
		t.Run(tc.ref, func(t *testing.T) {
			dir := t.TempDir()
			args := []string{"copy", "--insecure-policy", "--src-tls-verify=false", "--preserve-digests", "--retry-times=0"}
			if tc.all {
				args = append(args, "--all")
			}
			args = append(args, "docker://"+host+"/"+tc.ref, "oci:"+dir+":x")
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
			if err != nil {
				t.Fatalf("skopeo %v: %v\n%s", args, err, out)
			}
			var idx v1.IndexManifest
			b := must(os.ReadFile(filepath.Join(dir, "index.json")))(t)
			if err := json.Unmarshal(b, &idx); err != nil || len(idx.Manifests) != 1 {
				t.Fatalf("index.json: %v %s", err, b)
			}
			if got := idx.Manifests[0].Digest; got != tc.want {
				t.Errorf("skopeo stored %s, bundle has %s", got, tc.want)
			}
		})
	}
}
