package bundle

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	spdxjson "github.com/spdx/tools-golang/json"
	"github.com/spdx/tools-golang/spdxlib"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

// sbomLock is a fixed lock for the golden SBOM.
func sbomLock() *Lock {
	return &Lock{
		APIVersion: "kpaas.dev/v1alpha1", Kind: LockKind, Name: "kpaas", Version: "1.4.1",
		ManifestDigest: "sha256:" + strings.Repeat("0", 64), KubernetesVersion: "v1.30.2",
		Platforms: []string{"linux/amd64"},
		Artifacts: []LockArtifact{
			{Kind: KindImage, Ref: "docker.io/library/nginx:1.25", Digest: "sha256:" + strings.Repeat("a", 64),
				MediaType: "application/vnd.oci.image.index.v1+json", Size: 1000, Source: "registry:docker.io"},
			{Kind: KindFile, Ref: "kpaas.local/files/kubeadm:v1.30.2", Digest: "sha256:" + strings.Repeat("b", 64),
				MediaType: "application/vnd.oci.image.manifest.v1+json", Size: 2000,
				Source: "https://dl.k8s.io/release/v1.30.2/bin/linux/amd64/kubeadm",
				File:   &LockedFile{Name: "kubeadm", SHA256: strings.Repeat("c", 64), Size: 1500, Mode: "0755", Target: "/usr/bin/kubeadm"}},
			{Kind: KindChart, Ref: "kpaas.local/charts/harbor:1.14.0", Digest: "sha256:" + strings.Repeat("d", 64),
				MediaType: "application/vnd.oci.image.manifest.v1+json", Size: 3000, Source: "mirror:/srv/mirror/charts/harbor-1.14.0.tgz",
				Chart: &LockChart{Name: "harbor", Version: "1.14.0", Release: "harbor", Namespace: "harbor", Order: 4}},
			{Kind: KindImage, Ref: "goharbor/harbor-core@sha256:" + strings.Repeat("e", 64), Digest: "sha256:" + strings.Repeat("e", 64),
				MediaType: "application/vnd.oci.image.manifest.v1+json", Size: 4000, Source: "layout:/srv/mirror/oci",
				SourceRepository: "https://github.com/goharbor/harbor", SourceRevision: "080b0220574cc853ae1e2946ce7a5610ba855757"},
			{Kind: KindOS, Ref: "kpaas.local/os/debian:12", Digest: "sha256:" + strings.Repeat("f", 64),
				MediaType: "application/vnd.oci.image.manifest.v1+json", Size: 5000, Source: "layout:/srv/mirror/oci"},
		},
	}
}

func TestSBOMGolden(t *testing.T) {
	got, err := MarshalSBOM(sbomLock())
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "sbom.golden.spdx.json")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -run SBOMGolden -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("SBOM differs from %s (run with -update if intended):\n%s", golden, got)
	}
}

func TestSBOMDeterministic(t *testing.T) {
	a, err := MarshalSBOM(sbomLock())
	if err != nil {
		t.Fatal(err)
	}
	l := sbomLock()
	slices.Reverse(l.Artifacts)
	b, err := MarshalSBOM(l)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Error("artifact order changes the SBOM")
	}
	var doc SPDXDocument
	if err := json.Unmarshal(a, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.CreationInfo.Created != "1970-01-01T00:00:00Z" {
		t.Errorf("created = %s", doc.CreationInfo.Created)
	}

	// The namespace follows the lock.
	l.Version = "1.4.2"
	c, _ := MarshalSBOM(l)
	var doc2 SPDXDocument
	json.Unmarshal(c, &doc2)
	if doc2.DocumentNamespace == doc.DocumentNamespace {
		t.Error("a different lock gave the same documentNamespace")
	}

	d, _ := MarshalSBOM(sbomLock(), WithCreated(time.Unix(1700000000, 0)))
	var doc3 SPDXDocument
	json.Unmarshal(d, &doc3)
	if doc3.CreationInfo.Created != "2023-11-14T22:13:20Z" || doc3.DocumentNamespace != doc.DocumentNamespace {
		t.Errorf("WithCreated: created %s, namespace %s", doc3.CreationInfo.Created, doc3.DocumentNamespace)
	}
	// The package never reads the environment: the CLI passes
	// SOURCE_DATE_EPOCH as WithCreated.
	t.Setenv("SOURCE_DATE_EPOCH", "yesterday")
	e, err := MarshalSBOM(sbomLock())
	if err != nil || !bytes.Contains(e, []byte(`"created": "1970-01-01T00:00:00Z"`)) {
		t.Errorf("with SOURCE_DATE_EPOCH in the environment: %v\n%s", err, e)
	}
}

// TestSBOMIsSPDX parses the document back with the SPDX project's Go
// library and validates it, then checks the fields it requires.
func TestSBOMIsSPDX(t *testing.T) {
	f := newFixture(t)
	b, err := os.ReadFile(f.store.Path(SBOMFile))
	if err != nil {
		t.Fatal(err)
	}
	doc, err := spdxjson.Read(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("tools-golang cannot read the SBOM: %v", err)
	}
	if err := spdxlib.ValidateDocument(doc); err != nil {
		t.Fatalf("invalid SPDX document: %v", err)
	}
	described, err := spdxlib.GetDescribedPackageIDs(doc)
	if err != nil {
		t.Fatal(err)
	}
	if doc.SPDXVersion != "SPDX-2.3" || doc.DataLicense != "CC0-1.0" || len(doc.Packages) != 4 || len(described) != 4 {
		t.Fatalf("version %s, license %s, %d packages, %d described", doc.SPDXVersion, doc.DataLicense, len(doc.Packages), len(described))
	}
	idRE := regexp.MustCompile(`^SPDXRef-[A-Za-z0-9.-]+$`)
	purposes := map[string]string{}
	for _, p := range doc.Packages {
		if !idRE.MatchString("SPDXRef-" + string(p.PackageSPDXIdentifier)) {
			t.Errorf("bad SPDXID %q", p.PackageSPDXIdentifier)
		}
		if p.PackageName == "" || p.PackageDownloadLocation == "" || len(p.PackageChecksums) == 0 || len(p.PackageExternalReferences) != 1 {
			t.Errorf("package %s lacks fields: %+v", p.PackageSPDXIdentifier, p)
		}
		purposes[p.PackageName] = p.PrimaryPackagePurpose
		if p.PackageExternalReferences[0].RefType != "purl" || p.PackageExternalReferences[0].Category != "PACKAGE-MANAGER" {
			t.Errorf("package %s: external ref %+v", p.PackageName, p.PackageExternalReferences[0])
		}
	}
	want := map[string]string{"docker.io/library/nginx": "CONTAINER", "docker.io/library/busybox": "CONTAINER", "harbor": "ARCHIVE", "kubeadm": "FILE"}
	for n, pp := range want {
		if purposes[n] != pp {
			t.Errorf("package %s: purpose %q, want %q (all: %v)", n, purposes[n], pp, purposes)
		}
	}
	// Same lock, same bytes.
	if err := f.store.WriteSBOM(f.lock(t)); err != nil {
		t.Fatal(err)
	}
	again, _ := os.ReadFile(f.store.Path(SBOMFile))
	if !bytes.Equal(b, again) {
		t.Error("rewriting the SBOM of the same lock changed it")
	}
}

func TestPURLs(t *testing.T) {
	p := sbomPackage(LockArtifact{Kind: KindImage, Ref: "docker.io/library/nginx:1.25", Digest: "sha256:abc", Source: "registry:docker.io"})
	want := "pkg:oci/nginx@sha256%3Aabc?repository_url=docker.io/library/nginx&tag=1.25"
	if got := p.ExternalRefs[0].ReferenceLocator; got != want {
		t.Errorf("purl = %s, want %s", got, want)
	}
	if p.DownloadLocation != "oci://docker.io/library/nginx:1.25" || p.Name != "docker.io/library/nginx" || p.VersionInfo != "1.25" {
		t.Errorf("package = %+v", p)
	}
	p = sbomPackage(LockArtifact{Kind: KindImage, Ref: "localhost:5000/a/b@sha256:abc", Digest: "sha256:abc", Source: "layout:/x"})
	if p.Name != "localhost:5000/a/b" || p.VersionInfo != "" || p.DownloadLocation != "NOASSERTION" {
		t.Errorf("package = %+v", p)
	}
}
