package seed

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"kpaas.dev/appliance/internal/bundle"
	"kpaas.dev/appliance/internal/testenv"
)

// Media types of Helm charts stored as OCI artifacts.
const (
	helmConfig  = "application/vnd.cncf.helm.config.v1+json"
	helmContent = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
	sbomType    = "application/vnd.example.sbom.v1+json"
	emptyJSON   = "application/vnd.oci.empty.v1+json"
)

// fixture is a bundle with a little of everything the seed must serve,
// and what a test needs to know about it.
type fixture struct {
	store *bundle.Store

	nginx       v1.Descriptor // docker.io/library/nginx:1.25, a two-platform index
	nginxChild  v1.Descriptor // its linux/amd64 image
	quayNginx   v1.Descriptor // quay.io/library/nginx:1.25, another image
	pause       v1.Descriptor // registry.k8s.io/pause:3.10
	controller  v1.Descriptor // registry.k8s.io/ingress-nginx/controller:v1.4.0@upstream, filtered
	upstreamIdx v1.Hash       // the upstream digest of controller
	coredns     v1.Descriptor // registry.k8s.io/coredns/coredns:v1.11.1@upstream, a sparse index
	corednsArm  v1.Hash       // its linux/arm64 child, left out of the bundle
	chart       v1.Descriptor // ghcr.io/kpaas/charts/harbor:1.10.0
	sbom        v1.Descriptor // a referrer of nginx

	layers map[string]v1.Hash // one layer digest per repository name
}

const (
	refNginx      = "docker.io/library/nginx:1.25"
	refQuayNginx  = "quay.io/library/nginx:1.25"
	refPause      = "registry.k8s.io/pause:3.10"
	refController = "registry.k8s.io/ingress-nginx/controller:v1.4.0"
	refChart      = "ghcr.io/kpaas/charts/harbor:1.10.0"
	refCoreDNS    = "registry.k8s.io/coredns/coredns:v1.11.1"
)

// must(f())(t) is f's value, failing t when f returned an error.
func must[T any](v T, err error) func(testing.TB) T {
	return func(t testing.TB) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// newFixture writes the fixture bundle into a temp folder.
func newFixture(t testing.TB) *fixture {
	t.Helper()
	ctx := context.Background()
	s := must(bundle.Create(t.TempDir()))(t)
	w := s.NewWriter()
	f := &fixture{store: s, layers: map[string]v1.Hash{}}
	var entries []v1.Descriptor

	// A multi-platform index.
	amd := ociImage(t, 2, 2048, "amd64", "")
	arm := ociImage(t, 2, 2048, "arm64", "v8")
	// Written out the way build tools write indexes (image-spec's structs,
	// so its field order), which clients that re-serialize expect.
	var children []ocispec.Descriptor
	for _, c := range []struct {
		img           v1.Image
		arch, variant string
	}{{amd, "amd64", ""}, {arm, "arm64", "v8"}} {
		d := must(w.WriteImage(ctx, c.img))(t)
		children = append(children, ocispec.Descriptor{
			MediaType: string(d.MediaType), Digest: digest.Digest(d.Digest.String()), Size: d.Size,
			Platform: &ocispec.Platform{OS: "linux", Architecture: c.arch, Variant: c.variant},
		})
	}
	f.nginx = writeManifest(t, w, types.OCIImageIndex, ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: children,
	})
	f.nginxChild = must(partialDescriptor(amd))(t)
	f.layers["docker.io/library/nginx"] = firstLayer(t, amd)
	entries = append(entries, bundle.Annotate(f.nginx, bundle.KindImage, refNginx))

	// Same path, another registry.
	quay := must(random.Image(1024, 1))(t)
	f.quayNginx = must(w.WriteImage(ctx, quay))(t)
	f.layers["quay.io/library/nginx"] = firstLayer(t, quay)
	entries = append(entries, bundle.Annotate(f.quayNginx, bundle.KindImage, refQuayNginx))

	pause := ociImage(t, 1, 4096, "amd64", "")
	f.pause = must(w.WriteImage(ctx, pause))(t)
	f.layers["registry.k8s.io/pause"] = firstLayer(t, pause)
	entries = append(entries, bundle.Annotate(f.pause, bundle.KindImage, refPause))

	// An index filtered to one platform, pinned by its upstream digest.
	up := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: must(random.Image(512, 1))(t), Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: must(random.Image(512, 1))(t), Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "s390x"}}},
	)
	f.upstreamIdx = must(up.Digest())(t)
	f.controller = must(w.WriteIndex(ctx, up, func(d v1.Descriptor) bool { return d.Platform.Architecture == "amd64" }))(t)
	if f.controller.Annotations[bundle.AnnotationSourceDigest] != f.upstreamIdx.String() {
		t.Fatalf("filtered index lacks its source digest: %v", f.controller.Annotations)
	}
	entries = append(entries, bundle.Annotate(f.controller, bundle.KindImage, refController+"@"+f.upstreamIdx.String()))

	// The same kept sparse: the upstream index byte for byte, with only
	// the selected platform's image in the bundle.
	cdAmd, cdArm := ociImage(t, 1, 512, "amd64", ""), ociImage(t, 1, 512, "arm64", "")
	cdAmdDesc := must(w.WriteImage(ctx, cdAmd))(t)
	cdArmDesc := must(partialDescriptor(cdArm))(t)
	f.corednsArm = cdArmDesc.Digest
	f.coredns = writeManifest(t, w, types.OCIImageIndex, ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{
			{MediaType: string(cdAmdDesc.MediaType), Digest: digest.Digest(cdAmdDesc.Digest.String()), Size: cdAmdDesc.Size, Platform: &ocispec.Platform{OS: "linux", Architecture: "amd64"}},
			{MediaType: string(cdArmDesc.MediaType), Digest: digest.Digest(cdArmDesc.Digest.String()), Size: cdArmDesc.Size, Platform: &ocispec.Platform{OS: "linux", Architecture: "arm64"}},
		},
	})
	entries = append(entries, bundle.Annotate(f.coredns, bundle.KindImage, refCoreDNS+"@"+f.coredns.Digest.String()))

	// A Helm chart.
	chartCfg := []byte(`{"name":"harbor","version":"1.10.0","apiVersion":"v2"}`)
	chartTgz := bytes.Repeat([]byte("chart-content "), 300)
	f.chart = writeManifest(t, w, types.OCIManifestSchema1, map[string]any{
		"schemaVersion": 2,
		"mediaType":     types.OCIManifestSchema1,
		"config":        blobDesc(t, w, helmConfig, chartCfg),
		"layers":        []v1.Descriptor{blobDesc(t, w, helmContent, chartTgz)},
	})
	f.layers["ghcr.io/kpaas/charts/harbor"] = blobDesc(t, w, helmContent, chartTgz).Digest
	entries = append(entries, bundle.Annotate(f.chart, bundle.KindChart, refChart))

	// An SBOM referring to the nginx index (OCI 1.1 subject).
	f.sbom = writeManifest(t, w, types.OCIManifestSchema1, map[string]any{
		"schemaVersion": 2,
		"mediaType":     types.OCIManifestSchema1,
		"artifactType":  sbomType,
		"config":        blobDesc(t, w, emptyJSON, []byte("{}")),
		"layers":        []v1.Descriptor{blobDesc(t, w, "application/spdx+json", []byte(`{"spdxVersion":"SPDX-2.3"}`))},
		"subject":       v1.Descriptor{MediaType: f.nginx.MediaType, Digest: f.nginx.Digest, Size: f.nginx.Size},
		"annotations":   map[string]string{"org.example.kind": "sbom"},
	})
	entries = append(entries, bundle.Annotate(f.sbom, bundle.KindFile, "docker.io/library/nginx@"+f.sbom.Digest.String()))

	if err := s.SetEntries(entries); err != nil {
		t.Fatal(err)
	}
	return f
}

// ociImage makes an OCI image (random.Image makes Docker ones) of random
// layers for a linux platform.
func ociImage(t testing.TB, layers int, size int64, arch, variant string) v1.Image {
	t.Helper()
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	for range layers {
		img = must(mutate.AppendLayers(img, must(random.Layer(size, types.OCILayer))(t)))(t)
	}
	cf := must(img.ConfigFile())(t).DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = "linux", arch, variant
	return must(mutate.ConfigFile(img, cf))(t)
}

func partialDescriptor(img v1.Image) (v1.Descriptor, error) {
	raw, err := img.RawManifest()
	if err != nil {
		return v1.Descriptor{}, err
	}
	h, n, err := v1.SHA256(bytes.NewReader(raw))
	if err != nil {
		return v1.Descriptor{}, err
	}
	mt, err := img.MediaType()
	return v1.Descriptor{MediaType: mt, Digest: h, Size: n}, err
}

func firstLayer(t testing.TB, img v1.Image) v1.Hash {
	t.Helper()
	m := must(img.Manifest())(t)
	return m.Layers[0].Digest
}

// blobDesc stores b and describes it.
func blobDesc(t testing.TB, w *bundle.Writer, mt types.MediaType, b []byte) v1.Descriptor {
	t.Helper()
	h, n, err := w.WriteBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	return v1.Descriptor{MediaType: mt, Digest: h, Size: n}
}

// writeManifest stores a manifest written out by hand.
func writeManifest(t testing.TB, w *bundle.Writer, mt types.MediaType, m any) v1.Descriptor {
	t.Helper()
	b := must(json.Marshal(m))(t)
	return blobDesc(t, w, mt, b)
}

// serve starts the seed for f on 127.0.0.1 and returns its host:port and
// the log it writes.
func (f *fixture) serve(t testing.TB, opts ...Option) (string, *testenv.LockedBuffer) {
	t.Helper()
	logs := &testenv.LockedBuffer{}
	opts = append([]Option{WithLogger(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))}, opts...)
	srv := must(New(f.store, opts...))(t)
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	return strings.TrimPrefix(ts.URL, "http://"), logs
}
