package bundles_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"

	"kpaas.dev/appliance/builder/bake"
	tc "kpaas.dev/appliance/builder/toolchain"
	"kpaas.dev/appliance/internal/bundle"
	"kpaas.dev/appliance/internal/testenv"
)

// TestDemoBundleBakesOffline bakes bundles/demo.yaml exactly as `make demo`
// does: from the toolchain mirror (out/mirror, built by `make toolchain`,
// which `make test` runs first), the OS image (out/os, which `make test`
// builds as root) and the demo workload's mirror, offline.
func TestDemoBundleBakesOffline(t *testing.T) {
	if testing.Short() {
		t.Skip("bakes ~550 MiB")
	}
	toolchain, err := filepath.Abs("../out/mirror")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(toolchain, "files", "SHA256SUMS")); err != nil {
		testenv.SkipOrFailf(t, "the toolchain mirror is not built (%v): run `make toolchain`", err)
	}
	osImage, err := filepath.Abs("../out/os")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(osImage, "index.json")); err != nil {
		t.Skipf("the OS image is not built (%v): run `kpaas os build images/debian-12.yaml -o out/os` as root", err)
	}
	work := t.TempDir()
	demo := filepath.Join(work, "demo-mirror")
	cmd := exec.Command("go", "run", "./demo/mkmirror", "-o", demo)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mkmirror: %v\n%s", err, out)
	}
	out := filepath.Join(work, "bundle")
	sum, err := bake.Bake(context.Background(), bake.Options{
		Manifest: "demo.yaml",
		Out:      out,
		Mirrors:  []string{toolchain, osImage, demo},
		Offline:  true,
	})
	if err != nil {
		t.Fatalf("baking demo.yaml (if a sha256 differs, the toolchain was built with another Go version: update demo.yaml from out/mirror/files/SHA256SUMS): %v", err)
	}
	// 22 images: the OS image, 10 listed, and 11 that only the charts and
	// the platform's manifests name (the hello probe, Harbor's eight,
	// MariaDB, the storage provisioner); 14 files: 13 listed and the
	// storage release's manifests.
	if sum.Images != 22 || sum.ChartImages != 11 || sum.Charts != 3 || sum.Files != 14 {
		t.Errorf("summary = %d images (%d for charts and manifests), %d charts, %d files; want 22 (11, the OS image counted), 3, 14", sum.Images, sum.ChartImages, sum.Charts, sum.Files)
	}
	s, err := bundle.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := s.Verify(context.Background(), bundle.VerifyOptions{})
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	lock, err := s.ReadLock()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"registry.k8s.io/kube-apiserver:v1.35.4": false, "registry.k8s.io/pause:3.10.1": false, "docker.io/kpaas/hello-probe:0.1.0": false,
		"docker.io/goharbor/harbor-core:v2.15.2": false, "kpaas.local/goharbor/harbor-portal-standin:v2.15.2": false,
		"docker.io/kpaas/mariadb:10.11": false, "docker.io/rancher/local-path-provisioner:v0.0.30": false, "docker.io/library/busybox:1.35.0": false}
	for _, a := range lock.Artifacts {
		if _, ok := want[a.Ref]; ok {
			want[a.Ref] = true
		}
		// Images built from Harbor's sources say which, in the lock and
		// the SBOM.
		if a.Ref == "docker.io/goharbor/harbor-core:v2.15.2" &&
			(a.SourceRepository != "https://github.com/goharbor/harbor" || a.SourceRevision != tc.HarborCommit) {
			t.Errorf("%s: source %q at %q in the lock", a.Ref, a.SourceRepository, a.SourceRevision)
		}
	}
	sbom, err := s.ReadFile(bundle.SBOMFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(sbom), "built from the sources of https://github.com/goharbor/harbor at commit "+tc.HarborCommit) {
		t.Errorf("the SBOM does not record Harbor's sources")
	}
	for r, found := range want {
		if !found {
			t.Errorf("demo bundle lacks %s", r)
		}
	}
	if !rep.OK() {
		t.Errorf("verify problems: %v", rep.Problems)
	}
	checkDiffIDs(t, out)
}

// checkDiffIDs checks every image layer of the bundle against its config's
// diff ID (the digest of the uncompressed layer), as containerd does when
// it unpacks: an image assembled with a wrong one bakes and verifies, but
// never runs.
func checkDiffIDs(t *testing.T, dir string) {
	t.Helper()
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var images []v1.Image
	for _, d := range im.Manifests {
		switch {
		case d.MediaType.IsImage():
			img, err := idx.Image(d.Digest)
			if err != nil {
				t.Fatal(err)
			}
			images = append(images, img)
		case d.MediaType.IsIndex():
			sub, err := idx.ImageIndex(d.Digest)
			if err != nil {
				t.Fatal(err)
			}
			sm, err := sub.IndexManifest()
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range sm.Manifests {
				img, err := sub.Image(c.Digest)
				if err == nil {
					images = append(images, img)
				}
			}
		}
	}
	checked := 0
	for _, img := range images {
		cf, err := img.ConfigFile()
		if err != nil || cf.RootFS.Type != "layers" {
			continue // not a container image (charts, files)
		}
		layers, err := img.Layers()
		if err != nil {
			t.Fatal(err)
		}
		for i, l := range layers {
			if i >= len(cf.RootFS.DiffIDs) {
				t.Errorf("image with %d layers lists %d diff IDs", len(layers), len(cf.RootFS.DiffIDs))
				break
			}
			rc, err := l.Uncompressed()
			if err != nil {
				t.Fatal(err)
			}
			h := sha256.New()
			_, err = io.Copy(h, rc)
			rc.Close()
			if err != nil {
				continue // a layer the media leave out, or not gzip
			}
			if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != cf.RootFS.DiffIDs[i].String() {
				d, _ := l.Digest()
				t.Errorf("layer %s: uncompressed digest %s, config says %s", d, got, cf.RootFS.DiffIDs[i])
			}
			checked++
		}
	}
	if checked == 0 {
		t.Error("no layer checked")
	}
}
