package bundle

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Artifact references of the test bundle.
const (
	refNginx   = "docker.io/library/nginx:1.25"
	refBusybox = "docker.io/library/busybox:1.36"
	refChart   = "kpaas.local/charts/harbor:1.14.0"
	refFile    = "kpaas.local/files/kubeadm:v1.30.2"
)

// fixture is a bundle made by the Store/Writer API: a 2-platform index
// and a single image that share one layer, a Helm chart and a host file;
// with lock, SBOM, SHA256SUMS and signature.
type fixture struct {
	dir   string
	store *Store
	pub   ed25519.PublicKey
	priv  ed25519.PrivateKey

	shared       v1.Descriptor            // layer in nginx (both platforms) and busybox
	nginxIndex   v1.Descriptor            // top-level
	nginx        map[string]v1.Descriptor // platform → manifest descriptor
	nginxConfig  map[string]v1.Descriptor // platform → config
	nginxOwn     map[string]v1.Descriptor // platform → second layer
	busybox      v1.Descriptor            // manifest
	busyboxOwn   v1.Descriptor            // second layer
	chart, file  v1.Descriptor            // manifests
	fileContent  []byte
	chartArchive []byte
}

// newFixture builds the test bundle in a fresh folder. The content is
// the same on every call (seeded random layers).
func newFixture(t testing.TB) *fixture {
	t.Helper()
	ctx := context.Background()
	f := &fixture{
		dir:         filepath.Join(t.TempDir(), "bundle"),
		nginx:       map[string]v1.Descriptor{},
		nginxConfig: map[string]v1.Descriptor{},
		nginxOwn:    map[string]v1.Descriptor{},
	}
	s, err := Create(f.dir)
	if err != nil {
		t.Fatal(err)
	}
	f.store = s
	src := rand.New(rand.NewSource(1))
	layer := func(size int64) v1.Layer {
		l, err := random.Layer(size, types.OCILayer, random.WithSource(src))
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	shared := layer(20000)
	image := func(arch string, layers ...v1.Layer) v1.Image {
		img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
		img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
		img, err := mutate.ConfigFile(img, &v1.ConfigFile{OS: "linux", Architecture: arch, RootFS: v1.RootFS{Type: "layers"}})
		if err != nil {
			t.Fatal(err)
		}
		img, err = mutate.AppendLayers(img, layers...)
		if err != nil {
			t.Fatal(err)
		}
		return img
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	imgs := map[string]v1.Image{}
	for _, arch := range []string{"amd64", "arm64"} {
		imgs[arch] = image(arch, shared, layer(30000))
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        imgs[arch],
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}},
		})
	}
	busybox := image("amd64", shared, layer(10000))

	w := s.NewWriter()
	var ds []v1.Descriptor
	d, err := w.WriteIndex(ctx, idx, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.nginxIndex = d
	ds = append(ds, Annotate(d, KindImage, refNginx))
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range im.Manifests {
		arch := "linux/" + c.Platform.Architecture
		f.nginx[arch] = c
		m, err := imgs[c.Platform.Architecture].Manifest()
		if err != nil {
			t.Fatal(err)
		}
		f.nginxConfig[arch] = m.Config
		f.shared = m.Layers[0]
		f.nginxOwn[arch] = m.Layers[1]
	}
	if d, err = w.WriteImage(ctx, busybox); err != nil {
		t.Fatal(err)
	}
	f.busybox = d
	ds = append(ds, Annotate(d, KindImage, refBusybox))
	m, err := busybox.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	f.busyboxOwn = m.Layers[1]

	// A Helm chart, stored as Helm's OCI artifact.
	f.chartArchive = []byte("not really a tgz, but a chart archive all the same\n")
	cfgHash, cfgSize, err := w.WriteBytes([]byte(`{"name":"harbor","version":"1.14.0","apiVersion":"v2"}`))
	if err != nil {
		t.Fatal(err)
	}
	arcHash, arcSize, err := w.WriteBytes(f.chartArchive)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := ChartManifest(v1.Descriptor{Digest: cfgHash, Size: cfgSize}, v1.Descriptor{Digest: arcHash, Size: arcSize}, "harbor", "1.14.0")
	if err != nil {
		t.Fatal(err)
	}
	h, size, err := w.WriteBytes(raw)
	if err != nil {
		t.Fatal(err)
	}
	f.chart = v1.Descriptor{MediaType: types.OCIManifestSchema1, Digest: h, Size: size}
	ds = append(ds, Annotate(f.chart, KindChart, refChart))

	// A host file: an artifact manifest with one layer.
	f.fileContent = bytes.Repeat([]byte("#!/bin/sh\necho kubeadm\n"), 100)
	fh, fsize, err := w.WriteBytes(f.fileContent)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := w.WriteBytes(EmptyJSON); err != nil {
		t.Fatal(err)
	}
	raw, err = FileManifest(v1.Descriptor{Digest: fh, Size: fsize}, "kubeadm", "v1.30.2", "0755", "/usr/bin/kubeadm")
	if err != nil {
		t.Fatal(err)
	}
	if h, size, err = w.WriteBytes(raw); err != nil {
		t.Fatal(err)
	}
	f.file = v1.Descriptor{MediaType: types.OCIManifestSchema1, Digest: h, Size: size}
	ds = append(ds, Annotate(f.file, KindFile, refFile))

	if err := s.SetEntries(ds); err != nil {
		t.Fatal(err)
	}
	lock := f.lock(t)
	lb, err := lock.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.WriteFile(LockFile, lb); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteSBOM(lock); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteSums(); err != nil {
		t.Fatal(err)
	}
	f.pub, f.priv, err = ed25519.GenerateKey(rand.New(rand.NewSource(2)))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Sign(f.priv); err != nil {
		t.Fatal(err)
	}
	return f
}

// lock builds the lock the way the bake does: one artifact per entry,
// sized by walking it.
func (f *fixture) lock(t testing.TB) *Lock {
	t.Helper()
	entries, err := f.store.Entries()
	if err != nil {
		t.Fatal(err)
	}
	l := &Lock{APIVersion: "kpaas.dev/v1alpha1", Kind: LockKind, Name: "kpaas-test", Version: "0.0.1",
		ManifestDigest: "sha256:" + hex.EncodeToString(make([]byte, 32)), KubernetesVersion: "v1.30.2",
		Platforms: []string{"linux/amd64", "linux/arm64"}}
	for _, e := range entries {
		a := LockArtifact{Kind: e.Kind, Ref: e.Ref, Digest: e.Descriptor.Digest.String(), MediaType: string(e.Descriptor.MediaType)}
		seen := map[v1.Hash]bool{}
		if err := f.store.Walk(e.Descriptor, func(n Node) error {
			if !seen[n.Descriptor.Digest] {
				seen[n.Descriptor.Digest] = true
				a.Size += n.Descriptor.Size
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		switch e.Kind {
		case KindImage:
			a.Source = "registry:docker.io"
		case KindChart:
			a.Source = "https://helm.goharbor.io/harbor-1.14.0.tgz"
			a.Chart = &LockChart{Name: "harbor", Version: "1.14.0", Release: "harbor", Namespace: "harbor", Order: 3}
		case KindFile:
			sum := sha256.Sum256(f.fileContent)
			a.Source = "https://dl.k8s.io/release/v1.30.2/bin/linux/amd64/kubeadm"
			a.File = &LockedFile{Name: "kubeadm", SHA256: hex.EncodeToString(sum[:]), Size: int64(len(f.fileContent)), Mode: "0755", Target: "/usr/bin/kubeadm"}
		}
		l.Artifacts = append(l.Artifacts, a)
	}
	return l
}

// blobPath is the file of a blob in the fixture.
func (f *fixture) blobPath(t testing.TB, h v1.Hash) string {
	t.Helper()
	p, err := f.store.BlobPath(h)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// flipByte inverts one byte of a file in the middle.
func flipByte(t testing.TB, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// replaceIn rewrites the first occurrence of old in a file.
func replaceIn(t testing.TB, path, old, new string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(old)) {
		t.Fatalf("%s does not contain %q", path, old)
	}
	if err := os.WriteFile(path, bytes.Replace(b, []byte(old), []byte(new), 1), 0o644); err != nil {
		t.Fatal(err)
	}
}

// readJSON decodes a JSON file into v.
func readJSON(t testing.TB, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}
