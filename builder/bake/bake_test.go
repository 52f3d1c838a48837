package bake_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"kpaas.dev/appliance/builder/bake"
	"kpaas.dev/appliance/builder/source"
	"kpaas.dev/appliance/internal/bundle"
)

// testRegistry is a real registry (go-containerregistry's) on 127.0.0.1
// holding the images the test manifests name, as docker.io/test/…
type testRegistry struct {
	host     string
	blobGets atomic.Int64
	failAt   atomic.Int64 // fail blob GETs after this many (0: never)
	corrupt  atomic.Bool  // answer blob GETs with wrong bytes
	digests  map[string]v1.Hash
}

func newTestRegistry(t *testing.T) *testRegistry {
	t.Helper()
	tr := &testRegistry{digests: map[string]v1.Hash{}}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
			n := tr.blobGets.Add(1)
			if tr.corrupt.Load() {
				io.WriteString(w, "these are not the bytes you are looking for")
				return
			}
			if f := tr.failAt.Load(); f > 0 && n > f {
				http.Error(w, "injected failure", http.StatusServiceUnavailable)
				return
			}
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	tr.host = strings.TrimPrefix(srv.URL, "http://")

	// A shared base layer makes dedup visible.
	base, err := random.Layer(512<<10, types.OCILayer)
	if err != nil {
		t.Fatal(err)
	}
	mk := func(extra int64) v1.Image {
		l, err := random.Layer(extra, types.OCILayer)
		if err != nil {
			t.Fatal(err)
		}
		img, err := mutate.AppendLayers(mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON), base, l)
		if err != nil {
			t.Fatal(err)
		}
		return img
	}
	put := func(repo string, img v1.Image) {
		r, err := name.NewTag(tr.host+"/"+repo, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(r, img); err != nil {
			t.Fatal(err)
		}
		d, _ := img.Digest()
		tr.digests[repo] = d
	}
	put("test/web:1", mk(256<<10))
	put("test/sidecar:1", mk(128<<10))
	put("test/extra:1", mk(64<<10))

	// A two-platform index.
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
		mutate.IndexAddendum{Add: mk(300 << 10), Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: mk(300 << 10), Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
	)
	r, _ := name.NewTag(tr.host+"/test/multi:1", name.Insecure)
	if err := remote.WriteIndex(r, idx); err != nil {
		t.Fatal(err)
	}
	d, _ := idx.Digest()
	tr.digests["test/multi:1"] = d
	return tr
}

// manifest writes a bundle manifest next to copies of testdata.
func manifest(t *testing.T, body string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS("testdata")); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "bundle.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const baseManifest = `apiVersion: kpaas.dev/v1alpha1
kind: Bundle
metadata:
  name: test
  version: 1.0.0
kubernetes:
  version: v1.35.4
images:
  - docker.io/test/multi:1
charts:
  - name: web
    source: charts/web
    version: 1.0.0
    namespace: web
files:
  - name: hello
    source: hello.txt
    sha256: cdfa6274d557419e7ef1a709a2a872f9d2b72dc9e5b7aa3858396140933dd67b
    mode: "0644"
    target: /etc/hello.txt
`

func opts(tr *testRegistry, manifestPath, out string) bake.Options {
	return bake.Options{
		Manifest: manifestPath,
		Out:      out,
		Registry: source.Registry{Rewrite: map[string]string{"docker.io": tr.host}},
	}
}

func TestBakeFromRegistry(t *testing.T) {
	tr := newTestRegistry(t)
	m := manifest(t, baseManifest)
	out := filepath.Join(t.TempDir(), "bundle")
	sum, err := bake.Bake(context.Background(), opts(tr, m, out))
	if err != nil {
		t.Fatal(err)
	}
	if sum.Images != 3 || sum.Charts != 1 || sum.Files != 1 || sum.ChartImages != 2 {
		t.Errorf("summary = %+v, want 3 images (2 found in the chart), 1 chart, 1 file", sum)
	}
	if sum.DedupSaved <= 0 {
		t.Errorf("dedup saved %d bytes, want > 0 (a base layer is shared)", sum.DedupSaved)
	}

	s, err := bundle.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := s.Entries()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bundle.Entry{}
	for _, e := range entries {
		got[e.Ref] = e
	}
	for _, repo := range []string{"test/web:1", "test/sidecar:1"} {
		e, ok := got["docker.io/"+repo]
		if !ok {
			t.Errorf("bundle lacks docker.io/%s; entries: %v", repo, keys(got))
			continue
		}
		if e.Descriptor.Digest != tr.digests[repo] {
			t.Errorf("%s: digest %s, registry has %s", repo, e.Descriptor.Digest, tr.digests[repo])
		}
	}
	// The index is filtered to linux/amd64 and remembers its upstream digest.
	multi := got["docker.io/test/multi:1"]
	if multi.Descriptor.Annotations[bundle.AnnotationSourceDigest] != tr.digests["test/multi:1"].String() {
		t.Errorf("multi: source digest annotation %q, want %s", multi.Descriptor.Annotations[bundle.AnnotationSourceDigest], tr.digests["test/multi:1"])
	}
	raw, err := s.ReadManifest(multi.Descriptor)
	if err != nil {
		t.Fatal(err)
	}
	im, err := v1.ParseIndexManifest(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 || im.Manifests[0].Platform.Architecture != "amd64" {
		t.Errorf("multi: stored index has %d manifests (%v), want only linux/amd64", len(im.Manifests), im.Manifests)
	}
	if e := got["kpaas.local/charts/web:1.0.0"]; e.Kind != bundle.KindChart {
		t.Errorf("chart entry missing or wrong kind: %+v", e)
	}
	if e := got["kpaas.local/files/hello:cdfa6274d557"]; e.Kind != bundle.KindFile {
		t.Errorf("file entry missing or wrong kind: %+v", e)
	}
	lock, err := s.ReadLock()
	if err != nil {
		t.Fatal(err)
	}
	if len(lock.Artifacts) != 5 {
		t.Errorf("lock has %d artifacts, want 5", len(lock.Artifacts))
	}
	rep, err := s.Verify(context.Background(), bundle.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		t.Errorf("verify: %v", rep.Problems)
	}
}

func keys(m map[string]bundle.Entry) []string {
	var k []string
	for r := range m {
		k = append(k, r)
	}
	return k
}

// TestRebakeWritesNothing: a second bake of an unchanged manifest fetches
// no blob and rewrites no file.
func TestRebakeWritesNothing(t *testing.T) {
	tr := newTestRegistry(t)
	m := manifest(t, baseManifest)
	out := filepath.Join(t.TempDir(), "bundle")
	if _, err := bake.Bake(context.Background(), opts(tr, m, out)); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, out)
	old := time.Now().Add(-time.Hour)
	for p := range before {
		os.Chtimes(filepath.Join(out, p), old, old)
	}
	gets := tr.blobGets.Load()
	sum, err := bake.Bake(context.Background(), opts(tr, m, out))
	if err != nil {
		t.Fatal(err)
	}
	if sum.Written.BlobsWritten != 0 {
		t.Errorf("re-bake wrote %d blobs, want 0", sum.Written.BlobsWritten)
	}
	if n := tr.blobGets.Load() - gets; n != 0 {
		t.Errorf("re-bake fetched %d blobs, want 0", n)
	}
	for p := range snapshot(t, out) {
		fi, err := os.Stat(filepath.Join(out, p))
		if err != nil {
			t.Fatal(err)
		}
		if fi.ModTime().After(old.Add(time.Second)) {
			t.Errorf("re-bake rewrote %s", p)
		}
	}
}

// TestBakeReproducible: the same inputs give byte-identical bundles.
func TestBakeReproducible(t *testing.T) {
	tr := newTestRegistry(t)
	m := manifest(t, baseManifest)
	a, b := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")
	for _, out := range []string{a, b} {
		if _, err := bake.Bake(context.Background(), opts(tr, m, out)); err != nil {
			t.Fatal(err)
		}
	}
	sa, sb := snapshot(t, a), snapshot(t, b)
	if len(sa) != len(sb) {
		t.Fatalf("bundles differ: %d files vs %d", len(sa), len(sb))
	}
	for p, content := range sa {
		if !bytes.Equal(content, sb[p]) {
			t.Errorf("%s differs between two bakes of the same inputs", p)
		}
	}
}

// TestBakeResumes: a bake cut off half-way (the registry fails) leaves no
// partial blob; the next bake fetches only what is missing.
func TestBakeResumes(t *testing.T) {
	tr := newTestRegistry(t)
	m := manifest(t, baseManifest)
	out := filepath.Join(t.TempDir(), "bundle")
	tr.failAt.Store(3)
	o := opts(tr, m, out)
	o.Jobs = 1
	if _, err := bake.Bake(context.Background(), o); err == nil {
		t.Fatal("bake with a failing registry succeeded")
	}
	// Nothing half-written: every blob file present has its digest.
	s, err := bundle.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	var present int
	filepath.WalkDir(filepath.Join(out, "blobs"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if strings.HasPrefix(d.Name(), ".tmp-") {
			t.Errorf("temp file left behind: %s", p)
			return nil
		}
		present++
		if _, err := s.ReadBlob(v1.Hash{Algorithm: "sha256", Hex: d.Name()}); err != nil {
			t.Errorf("blob %s: %v", d.Name(), err)
		}
		return nil
	})
	tr.failAt.Store(0)
	sum, err := bake.Bake(context.Background(), opts(tr, m, out))
	if err != nil {
		t.Fatal(err)
	}
	if sum.Written.BlobsSkipped == 0 {
		t.Errorf("resumed bake skipped no blob; %d were present", present)
	}
}

func TestBakeMissingChartImage(t *testing.T) {
	tr := newTestRegistry(t)
	body := strings.Replace(baseManifest, "    namespace: web\n", "    namespace: web\n    values:\n      extra: docker.io/test/absent:9\n", 1)
	m := manifest(t, body)
	_, err := bake.Bake(context.Background(), opts(tr, m, filepath.Join(t.TempDir(), "b")))
	if err == nil || !strings.Contains(err.Error(), "docker.io/test/absent:9 (needed by chart web)") {
		t.Fatalf("err = %v, want it to name docker.io/test/absent:9 and chart web", err)
	}
	// Excluded with a reason, the same manifest bakes.
	m = manifest(t, body+"exclude:\n  - image: docker.io/test/absent:*\n    reason: pulled from the site registry\n")
	if _, err := bake.Bake(context.Background(), opts(tr, m, filepath.Join(t.TempDir(), "c"))); err != nil {
		t.Fatalf("excluded image still failed the bake: %v", err)
	}
}

func TestBakeFileChecksumMismatch(t *testing.T) {
	tr := newTestRegistry(t)
	m := manifest(t, strings.Replace(baseManifest, "cdfa6274", "00000000", 1))
	out := filepath.Join(t.TempDir(), "b")
	_, err := bake.Bake(context.Background(), opts(tr, m, out))
	if err == nil || !strings.Contains(err.Error(), `file "hello"`) || !strings.Contains(err.Error(), "cdfa6274d557419e") {
		t.Fatalf("err = %v, want a sha256 mismatch naming file hello and its real digest", err)
	}
}

func TestBakeOfflineNeedsMirror(t *testing.T) {
	tr := newTestRegistry(t)
	m := manifest(t, baseManifest)
	o := opts(tr, m, filepath.Join(t.TempDir(), "b"))
	o.Offline = true
	_, err := bake.Bake(context.Background(), o)
	if err == nil || !errors.Is(err, err) || !strings.Contains(err.Error(), "docker.io/test/multi:1") {
		t.Fatalf("offline bake without mirror: err = %v, want unresolved docker.io/test/multi:1", err)
	}
	// A finished bundle is a mirror for an offline bake of the same manifest.
	first := filepath.Join(t.TempDir(), "first")
	if _, err := bake.Bake(context.Background(), opts(tr, m, first)); err != nil {
		t.Fatal(err)
	}
	o.Mirrors = []string{first}
	o.Out = filepath.Join(t.TempDir(), "second")
	if _, err := bake.Bake(context.Background(), o); err != nil {
		t.Fatalf("offline bake from a bundle mirror: %v", err)
	}
}

// snapshot reads every file of a folder.
func snapshot(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out[rel] = b
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestBakePinnedIndexKeptWhole: an index pinned by digest keeps every
// platform and its upstream digest, so pulls by that digest still work.
func TestBakePinnedIndexKeptWhole(t *testing.T) {
	tr := newTestRegistry(t)
	pinned := "docker.io/test/multi:1@" + tr.digests["test/multi:1"].String()
	m := manifest(t, strings.Replace(baseManifest, "  - docker.io/test/multi:1\n", "  - "+pinned+"\n", 1))
	out := filepath.Join(t.TempDir(), "bundle")
	if _, err := bake.Bake(context.Background(), opts(tr, m, out)); err != nil {
		t.Fatal(err)
	}
	s, _ := bundle.Open(out)
	entries, _ := s.Entries()
	for _, e := range entries {
		if e.Ref != pinned {
			continue
		}
		if e.Descriptor.Digest != tr.digests["test/multi:1"] {
			t.Errorf("pinned index stored as %s, want the upstream %s", e.Descriptor.Digest, tr.digests["test/multi:1"])
		}
		return
	}
	t.Errorf("bundle lacks %s", pinned)
}

// TestBakeRejectsCorruptBlobs: bytes that do not match their digest never
// land in the bundle.
func TestBakeRejectsCorruptBlobs(t *testing.T) {
	tr := newTestRegistry(t)
	tr.corrupt.Store(true)
	m := manifest(t, baseManifest)
	out := filepath.Join(t.TempDir(), "bundle")
	_, err := bake.Bake(context.Background(), opts(tr, m, out))
	if err == nil || !strings.Contains(err.Error(), "sha256:") {
		t.Fatalf("err = %v, want the bad blob named", err)
	}
	filepath.WalkDir(filepath.Join(out, "blobs", "sha256"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			s, _ := bundle.Open(out)
			if _, rerr := s.ReadBlob(v1.Hash{Algorithm: "sha256", Hex: d.Name()}); rerr != nil {
				t.Errorf("a bad blob was stored: %v", rerr)
			}
		}
		return nil
	})
}

// TestBakeCountsFileBytes: a host file counts with its real size in the
// summary (it is written with an unknown size), and the JSON summary uses
// the same camelCase keys as every other --json output.
func TestBakeCountsFileBytes(t *testing.T) {
	tr := newTestRegistry(t)
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	sum := sha256.Sum256(big)
	body := baseManifest + "  - name: big\n    source: big.bin\n    sha256: " + hex.EncodeToString(sum[:]) + "\n"
	m := manifest(t, body)
	if err := os.WriteFile(filepath.Join(filepath.Dir(m), "big.bin"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "bundle")
	s, err := bake.Bake(context.Background(), opts(tr, m, out))
	if err != nil {
		t.Fatal(err)
	}
	if s.Written.BytesWritten < int64(len(big)) {
		t.Errorf("wrote %d bytes, want at least %d (the 1 MiB file)", s.Written.BytesWritten, len(big))
	}
	if s.Written.BytesWritten > s.UniqueBytes {
		t.Errorf("wrote %d bytes, more than the bundle's %d unique bytes", s.Written.BytesWritten, s.UniqueBytes)
	}
	s2, err := bake.Bake(context.Background(), opts(tr, m, out))
	if err != nil {
		t.Fatal(err)
	}
	if s2.Written.BytesSkipped < int64(len(big)) {
		t.Errorf("re-bake skipped %d bytes, want at least %d (the 1 MiB file)", s2.Written.BytesSkipped, len(big))
	}
	raw, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var generic map[string]any
	json.Unmarshal(raw, &generic)
	written, _ := generic["written"].(map[string]any)
	for _, k := range []string{"blobsWritten", "blobsSkipped", "bytesWritten", "bytesSkipped"} {
		if _, ok := written[k]; !ok {
			t.Errorf("--json written lacks %q: %s", k, raw)
		}
	}
}

// TestUnsignedRebakeRemovesSignature: a bake without a key leaves no
// signature of an earlier bake behind.
func TestUnsignedRebakeRemovesSignature(t *testing.T) {
	tr := newTestRegistry(t)
	m := manifest(t, baseManifest)
	out := filepath.Join(t.TempDir(), "bundle")
	_, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	o := opts(tr, m, out)
	o.SignKey = priv
	if sum, err := bake.Bake(context.Background(), o); err != nil || !sum.Signed {
		t.Fatalf("signed bake: %v", err)
	}
	sum, err := bake.Bake(context.Background(), opts(tr, m, out))
	if err != nil {
		t.Fatal(err)
	}
	if sum.Signed || !sum.SignatureRemoved {
		t.Errorf("unsigned re-bake: signed %v, signature removed %v; want false, true", sum.Signed, sum.SignatureRemoved)
	}
	if _, err := os.Stat(filepath.Join(out, bundle.SignatureFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s after an unsigned bake: %v, want it gone", bundle.SignatureFile, err)
	}
	s, _ := bundle.Open(out)
	rep, err := s.Verify(context.Background(), bundle.VerifyOptions{})
	if err != nil || rep.Signature != bundle.SignatureAbsent {
		t.Errorf("verify: signature %q (%v), want %q", rep.Signature, err, bundle.SignatureAbsent)
	}
}

// TestBakeRemovesTempFiles: temp files a killed bake left are removed by
// the next bake; a bake that fails to resolve leaves a valid empty index.
func TestBakeRemovesTempFiles(t *testing.T) {
	tr := newTestRegistry(t)
	m := manifest(t, baseManifest)
	out := filepath.Join(t.TempDir(), "bundle")
	o := opts(tr, m, out)
	o.Offline = true
	if _, err := bake.Bake(context.Background(), o); err == nil {
		t.Fatal("offline bake without a mirror succeeded")
	}
	b, err := os.ReadFile(filepath.Join(out, bundle.IndexFile))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(`"manifests": []`)) {
		t.Errorf("index.json after a failed resolve:\n%s\nwant \"manifests\": []", b)
	}
	tmp := filepath.Join(out, "blobs", "sha256", ".tmp-"+strings.Repeat("0", 64)+"-42")
	if err := os.WriteFile(tmp, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := bake.Bake(context.Background(), opts(tr, m, out)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tmp); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("temp file after a bake: %v, want it removed", err)
	}
}

// TestBakeListsEveryUnresolvedImage: a network failure does not stop the
// resolve at the first image: every image that could not be resolved is
// listed, those not found and those whose registry failed.
func TestBakeListsEveryUnresolvedImage(t *testing.T) {
	tr := newTestRegistry(t)
	dead := httptest.NewServer(http.NotFoundHandler())
	deadHost := strings.TrimPrefix(dead.URL, "http://")
	dead.Close() // nothing listens there any more
	body := strings.Replace(baseManifest, "  - docker.io/test/multi:1\n",
		"  - docker.io/test/multi:1\n  - docker.io/test/absent:1\n  - quay.io/test/a:1\n  - quay.io/test/b:1\n", 1)
	m := manifest(t, body)
	o := opts(tr, m, filepath.Join(t.TempDir(), "b"))
	o.Registry.Rewrite["quay.io"] = deadHost
	_, err := bake.Bake(context.Background(), o)
	if err == nil {
		t.Fatal("bake with an unreachable registry succeeded")
	}
	for _, want := range []string{"3 of 6 images could not be resolved", "docker.io/test/absent:1", "quay.io/test/a:1: ", "quay.io/test/b:1: "} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v\nwant it to name %q", err, want)
		}
	}
}
