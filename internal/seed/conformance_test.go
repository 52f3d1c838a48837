package seed

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"kpaas.dev/appliance/internal/bundle"
	"kpaas.dev/appliance/internal/testenv"
)

// conformanceTool is the OCI distribution-spec conformance suite, a tool
// of this module (go.mod's tool directive pins its version).
const conformanceTool = "github.com/opencontainers/distribution-spec/conformance"

// TestConformance runs the OCI distribution-spec conformance suite against
// the seed, for the pull and content-discovery workflows. The seed is
// read-only, so the suite cannot push its own fixtures: the bundle holds
// the content instead and the suite is told about it (OCI_RO_DATA_*).
// The suite is run for the two ways of naming a repository without ns:
// with the registry in the path, and a bare path (docker.io fallback).
func TestConformance(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the conformance suite")
	}
	goBin := testenv.RequireTool(t, "go")
	bin := filepath.Join(t.TempDir(), "conformance")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, goBin, "build", "-o", bin, conformanceTool).CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v\n%s", conformanceTool, err, out)
	}

	cf := newConformanceFixture(t)
	host, _ := cf.fixture.serve(t)
	for _, repo := range []string{"registry.example/conformance/repo1", "conformance/repo1"} {
		t.Run(strings.ReplaceAll(repo, "/", "_"), func(t *testing.T) {
			// One run per branch of the suite: a run over everything with
			// push disabled crashes while writing its results.yaml (the
			// skipped blob-push branch leaves a nil test-data entry).
			apis := map[string]string{}
			for _, branch := range []string{"ping", "empty", "read-only", "missing-manifest", "invalid-digest-format"} {
				out, err := runConformance(ctx, bin, host, repo, "OCI Conformance Test/"+branch, cf)
				t.Logf("branch %s against /v2/%s/…:\n%s", branch, repo, conformanceSummary(out))
				if err != nil {
					t.Errorf("branch %s failed: %v\n%s", branch, err, out)
				}
				for _, m := range apiStatusRE.FindAllSubmatch(out, -1) {
					api, st := strings.TrimSpace(string(m[1])), string(m[2])
					switch {
					case apis[api] == "FAIL" || apis[api] == "Error":
						// a failure in any branch stands
					case st == "Pass" || st == "FAIL" || st == "Error" || apis[api] == "":
						apis[api] = st
					}
				}
			}
			// The read-side APIs must have run and passed, not been skipped.
			for _, api := range []string{"Ping", "Tag listing", "Referrers", "Manifest get by digest", "Manifest get by tag",
				"Manifest head by digest", "Manifest head by tag", "Blob get", "Blob head"} {
				if apis[api] != "Pass" {
					t.Errorf("API %q: %q, want Pass", api, apis[api])
				}
			}
		})
	}
}

// apiStatusRE matches a line of the suite's "API conformance" table.
var apiStatusRE = regexp.MustCompile(`(?m)^\s*([A-Z][A-Za-z ]+?)\.+:\s+(Pass|FAIL|Error|Skip|Disabled|Unknown)\s*$`)

// runConformance runs the suite once, restricted to one branch of tests.
func runConformance(ctx context.Context, bin, host, repo, filter string, cf *conformanceFixture) ([]byte, error) {
	results, err := os.MkdirTemp("", "conformance-results-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(results)
	cmd := exec.CommandContext(ctx, bin)
	cmd.Dir = results // no oci-conformance.yaml here: the environment is the whole configuration
	cmd.Env = append(os.Environ(),
		"OCI_REGISTRY="+host,
		"OCI_TLS=disabled",
		"OCI_REPO1="+repo,
		"OCI_REPO2="+repo,
		"OCI_RESULTS_DIR="+results,
		"OCI_VERSION=1.1",
		"OCI_LOG=warn",
		"OCI_FILTER_TEST="+filter,
		// Read side only: pull, tag list, referrers.
		"OCI_API_PULL=true",
		"OCI_API_TAGS_LIST=true",
		"OCI_API_REFERRER=true",
		"OCI_API_PUSH=false",
		"OCI_API_BLOBS_DELETE=false",
		"OCI_API_MANIFESTS_DELETE=false",
		"OCI_API_TAGS_DELETE=false",
		"OCI_API_BLOBS_DIGEST_HEADER=true",
		// With read-only data the suite never captures the manifest
		// response it would check the header of; TestManifestHeaders
		// checks Docker-Content-Digest instead.
		"OCI_API_MANIFESTS_DIGEST_HEADER=false",
		"OCI_RO_DATA_TAGS="+strings.Join(cf.tags, " "),
		"OCI_RO_DATA_MANIFESTS="+strings.Join(cf.manifests, " "),
		"OCI_RO_DATA_BLOBS="+strings.Join(cf.blobs, " "),
		"OCI_RO_DATA_REFERRERS="+strings.Join(cf.referrers, " "),
	)
	return cmd.CombinedOutput()
}

// conformanceSummary keeps the overall result and the counts of a report.
func conformanceSummary(out []byte) string {
	s := string(out)
	i := strings.Index(s, "OCI Conformance Result")
	if i < 0 {
		return s
	}
	s = s[i:]
	if j := strings.Index(s, "Total"); j >= 0 {
		if k := strings.IndexByte(s[j:], '\n'); k >= 0 {
			return s[:j+k]
		}
	}
	return s
}

// conformanceFixture is a bundle holding what the suite pulls, under both
// repository names it is run with, and the lists it is given.
type conformanceFixture struct {
	fixture                           *fixture
	tags, manifests, blobs, referrers []string
}

func newConformanceFixture(t *testing.T) *conformanceFixture {
	t.Helper()
	ctx := context.Background()
	s := must(bundle.Create(t.TempDir()))(t)
	w := s.NewWriter()
	cf := &conformanceFixture{fixture: &fixture{store: s}}

	img := ociImage(t, 2, 1024, "amd64", "")
	imgDesc := must(w.WriteImage(ctx, img))(t)
	other := ociImage(t, 1, 512, "arm64", "v8")
	otherDesc := must(w.WriteImage(ctx, other))(t)
	idx := writeManifest(t, w, types.OCIImageIndex, v1.IndexManifest{
		SchemaVersion: 2, MediaType: types.OCIImageIndex,
		Manifests: []v1.Descriptor{
			{MediaType: imgDesc.MediaType, Digest: imgDesc.Digest, Size: imgDesc.Size, Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}},
			{MediaType: otherDesc.MediaType, Digest: otherDesc.Digest, Size: otherDesc.Size, Platform: &v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}},
		},
	})
	chart := writeManifest(t, w, types.OCIManifestSchema1, map[string]any{
		"schemaVersion": 2,
		"mediaType":     types.OCIManifestSchema1,
		"config":        blobDesc(t, w, helmConfig, []byte(`{"name":"demo","version":"0.1.0","apiVersion":"v2"}`)),
		"layers":        []v1.Descriptor{blobDesc(t, w, helmContent, []byte("not really a tarball"))},
	})
	sbom := writeManifest(t, w, types.OCIManifestSchema1, map[string]any{
		"schemaVersion": 2,
		"mediaType":     types.OCIManifestSchema1,
		"artifactType":  sbomType,
		"config":        blobDesc(t, w, emptyJSON, []byte("{}")),
		"layers":        []v1.Descriptor{blobDesc(t, w, "application/spdx+json", []byte(`{"spdxVersion":"SPDX-2.3"}`))},
		"subject":       imgDesc,
	})

	var entries []v1.Descriptor
	for _, repo := range []string{"registry.example/conformance/repo1", "docker.io/conformance/repo1"} {
		entries = append(entries,
			bundle.Annotate(imgDesc, bundle.KindImage, repo+":image"),
			bundle.Annotate(idx, bundle.KindImage, repo+":index"),
			bundle.Annotate(chart, bundle.KindChart, repo+":chart"),
			bundle.Annotate(sbom, bundle.KindFile, repo+"@"+sbom.Digest.String()),
		)
	}
	if err := s.SetEntries(entries); err != nil {
		t.Fatal(err)
	}

	cf.tags = []string{"image", "index", "chart"}
	for _, d := range []v1.Descriptor{imgDesc, otherDesc, idx, chart, sbom} {
		cf.manifests = append(cf.manifests, d.Digest.String())
	}
	seen := map[string]bool{}
	for _, top := range []v1.Descriptor{idx, chart, sbom} {
		err := s.Walk(top, func(n bundle.Node) error {
			if d := n.Descriptor.Digest.String(); !seen[d] && !bundle.IsIndex(n.Descriptor.MediaType) && !bundle.IsManifest(n.Descriptor.MediaType) {
				seen[d] = true
				cf.blobs = append(cf.blobs, d)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	cf.referrers = []string{imgDesc.Digest.String(), idx.Digest.String()}
	return cf
}
