package push_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"kpaas.dev/appliance/internal/bundle"
)

// Media types of Helm charts stored as OCI artifacts.
const (
	helmConfig = types.MediaType("application/vnd.cncf.helm.config.v1+json")
	helmChart  = types.MediaType("application/vnd.cncf.helm.chart.content.v1.tar+gzip")
)

// testBundle describes a bundle made for a test.
type testBundle struct {
	store   *bundle.Store
	entries []bundle.Entry
	blobs   map[v1.Hash]int64 // every distinct blob (layers, configs) and its size
}

func randomBytes(t testing.TB, n int64) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// layer is a gzipped tar holding one file of n random bytes.
func layer(t testing.TB, n int64) v1.Layer {
	l, err := random.Layer(n, types.OCILayer)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func image(t testing.TB, layers ...v1.Layer) v1.Image {
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), layers...)
	if err != nil {
		t.Fatal(err)
	}
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	return img
}

// makeBundle builds a bundle with: three images sharing a base layer
// (two in one source registry, one in another), a multi-arch index, a
// Helm chart, and digest-pinned references (with and without a tag).
// layerSize sets the size of each layer.
func makeBundle(t testing.TB, layerSize int64) *testBundle {
	t.Helper()
	ctx := context.Background()
	s, err := bundle.Create(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	w := s.NewWriter()
	base := layer(t, layerSize)
	nginx := image(t, base, layer(t, layerSize))
	redis := image(t, base, layer(t, layerSize), layer(t, layerSize/2))
	controller := image(t, base, layer(t, layerSize))
	pause := image(t, layer(t, 1024))

	var ds []v1.Descriptor
	add := func(d v1.Descriptor, k bundle.Kind, ref string) { ds = append(ds, bundle.Annotate(d, k, ref)) }
	writeImg := func(img v1.Image) v1.Descriptor {
		d, err := w.WriteImage(ctx, img)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	add(writeImg(nginx), bundle.KindImage, "docker.io/library/nginx:1.25")
	add(writeImg(redis), bundle.KindImage, "docker.io/library/redis:7.2")
	cd := writeImg(controller)
	add(cd, bundle.KindImage, "registry.k8s.io/ingress-nginx/controller:v1.4.0@"+cd.Digest.String())
	pd := writeImg(pause)
	add(pd, bundle.KindImage, "registry.k8s.io/pause@"+pd.Digest.String())

	idx, err := random.Index(layerSize/4+1, 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	id, err := w.WriteIndex(ctx, idx, nil)
	if err != nil {
		t.Fatal(err)
	}
	add(id, bundle.KindImage, "quay.io/jetstack/cert-manager-controller:v1.14.0")

	add(writeChart(t, w, "mariadb", "18.2.0+1"), bundle.KindChart, "docker.io/bitnamicharts/mariadb:18.2.0+1")

	if err := s.SetEntries(ds); err != nil {
		t.Fatal(err)
	}
	tb := &testBundle{store: s, blobs: map[v1.Hash]int64{}}
	if tb.entries, err = s.Entries(); err != nil {
		t.Fatal(err)
	}
	for _, e := range tb.entries {
		err := s.Walk(e.Descriptor, func(n bundle.Node) error {
			if !bundle.IsIndex(n.Descriptor.MediaType) && !bundle.IsManifest(n.Descriptor.MediaType) {
				tb.blobs[n.Descriptor.Digest] = n.Descriptor.Size
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return tb
}

// writeChart stores a Helm chart artifact the way helm push lays it out.
func writeChart(t testing.TB, w *bundle.Writer, chart, version string) v1.Descriptor {
	t.Helper()
	cfg, _ := json.Marshal(map[string]string{"name": chart, "version": version, "apiVersion": "v2"})
	ch, cs, err := w.WriteBytes(cfg)
	if err != nil {
		t.Fatal(err)
	}
	content := randomBytes(t, 4096) // stands for the .tgz
	lh, ls, err := w.WriteBytes(content)
	if err != nil {
		t.Fatal(err)
	}
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		Config:        v1.Descriptor{MediaType: helmConfig, Digest: ch, Size: cs},
		Layers:        []v1.Descriptor{{MediaType: helmChart, Digest: lh, Size: ls}},
		Annotations:   map[string]string{"org.opencontainers.image.title": chart, "org.opencontainers.image.version": version},
	}
	raw, _ := json.Marshal(m)
	h, n, err := w.WriteBytes(raw)
	if err != nil {
		t.Fatal(err)
	}
	return v1.Descriptor{MediaType: types.OCIManifestSchema1, Digest: h, Size: n}
}

// verifyPulled pulls every artifact back by digest and by tag, checks the
// digests, and validates the content (every blob's digest).
func verifyPulled(t *testing.T, host string, tb *testBundle, repoOf func(ref string) (repo, tag string), ropts ...remote.Option) {
	t.Helper()
	for _, e := range tb.entries {
		repo, tag := repoOf(e.Ref)
		byDigest, err := name.NewDigest(host+"/"+repo+"@"+e.Descriptor.Digest.String(), name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		desc, err := remote.Get(byDigest, ropts...)
		if err != nil {
			t.Fatalf("pulling %s: %v", byDigest, err)
		}
		if desc.Digest != e.Descriptor.Digest || !bytes.Equal(mustRead(t, tb.store, e.Descriptor), desc.Manifest) {
			t.Fatalf("%s: registry has %s, bundle %s", e.Ref, desc.Digest, e.Descriptor.Digest)
		}
		switch {
		case bundle.IsIndex(desc.MediaType):
			idx, err := desc.ImageIndex()
			if err != nil {
				t.Fatal(err)
			}
			if err := validate.Index(idx); err != nil {
				t.Fatalf("%s: %v", e.Ref, err)
			}
		case e.Kind == bundle.KindChart:
			m, err := v1.ParseManifest(bytes.NewReader(desc.Manifest))
			if err != nil {
				t.Fatal(err)
			}
			for _, b := range append([]v1.Descriptor{m.Config}, m.Layers...) {
				l, err := remote.Layer(byDigest.Context().Digest(b.Digest.String()), ropts...)
				if err != nil {
					t.Fatal(err)
				}
				if got, err := l.Digest(); err != nil || got != b.Digest {
					t.Fatalf("chart blob %s: %v %v", b.Digest, got, err)
				}
				rc, err := l.Compressed()
				if err != nil {
					t.Fatalf("chart blob %s: %v", b.Digest, err)
				}
				var buf bytes.Buffer
				_, err = buf.ReadFrom(rc)
				rc.Close()
				if err != nil {
					t.Fatalf("chart blob %s: %v", b.Digest, err)
				}
				if h, _, _ := v1.SHA256(&buf); h != b.Digest {
					t.Fatalf("chart blob %s has digest %s", b.Digest, h)
				}
			}
		default:
			img, err := desc.Image()
			if err != nil {
				t.Fatal(err)
			}
			if err := validate.Image(img); err != nil {
				t.Fatalf("%s: %v", e.Ref, err)
			}
		}
		if tag == "" {
			continue
		}
		byTag, err := name.NewTag(host+"/"+repo+":"+tag, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		td, err := remote.Head(byTag, ropts...)
		if err != nil {
			t.Fatalf("head %s: %v", byTag, err)
		}
		if td.Digest != e.Descriptor.Digest {
			t.Fatalf("%s points at %s, want %s", byTag, td.Digest, e.Descriptor.Digest)
		}
	}
}

func mustRead(t *testing.T, s *bundle.Store, d v1.Descriptor) []byte {
	t.Helper()
	b, err := s.ReadManifest(d)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// perRegistry is the default mapping, as tests expect it.
func perRegistry(ref string) (repo, tag string) {
	r, _, _ := strings.Cut(ref, "@")
	if i := strings.LastIndexByte(r, ':'); i > strings.LastIndexByte(r, '/') {
		r, tag = r[:i], strings.ReplaceAll(r[i+1:], "+", "_")
	}
	return r, tag
}

// recorder is a RoundTripper that counts requests by kind and remembers
// the blobs whose upload the registry confirmed.
type recorder struct {
	next http.RoundTripper

	mu       sync.Mutex
	counts   map[string]int                 // "HEAD blob", "POST upload", "PATCH", "PUT blob", "PUT manifest", "HEAD manifest", …
	uploaded map[string]int                 // digest → confirmed uploads (PUT …?digest= answered 201)
	after    func(putUploads, uploaded int) // called after each response with counts so far
}

func newRecorder(next http.RoundTripper) *recorder {
	if next == nil {
		next = http.DefaultTransport
	}
	return &recorder{next: next, counts: map[string]int{}, uploaded: map[string]int{}}
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	kind := req.Method
	switch p := req.URL.Path; {
	case strings.Contains(p, "/blobs/uploads/"):
		if req.Method == http.MethodPost && req.URL.Query().Get("mount") != "" {
			kind = "POST mount"
		} else {
			kind += " upload"
		}
	case strings.Contains(p, "/blobs/"):
		kind += " blob"
	case strings.Contains(p, "/manifests/"):
		kind += " manifest"
	}
	resp, err := r.next.RoundTrip(req)
	r.mu.Lock()
	r.counts[kind]++
	if err == nil && req.Method == http.MethodPut && resp.StatusCode == http.StatusCreated && strings.Contains(req.URL.Path, "/blobs/uploads/") {
		r.uploaded[req.URL.Query().Get("digest")]++
	}
	after, puts, ups := r.after, r.counts["PUT upload"], len(r.uploaded)
	r.mu.Unlock()
	if after != nil {
		after(puts, ups)
	}
	return resp, err
}

func (r *recorder) count(kind string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.counts[kind]
}

func (r *recorder) uploads() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]int{}
	for k, v := range r.uploaded {
		out[k] = v
	}
	return out
}

// verifyPulledAuth pulls back from the Harbor double with its credentials.
func verifyPulledAuth(t *testing.T, host string, tb *testBundle) {
	t.Helper()
	verifyPulled(t, host, tb, perRegistry, remote.WithAuth(&authn.Basic{Username: "admin", Password: "Harbor12345"}))
}
