package push_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"kpaas.dev/appliance/internal/bundle"
	"kpaas.dev/appliance/internal/push"
	"kpaas.dev/appliance/internal/push/registrytest"
	"kpaas.dev/appliance/internal/retry"
)

var fastRetry = retry.Policy{Attempts: 5, Base: 5 * time.Millisecond, Max: 50 * time.Millisecond}

func opts(host string, rt http.RoundTripper) push.Options {
	return push.Options{Registry: host, Insecure: true, Transport: rt, Retry: fastRetry, RequestTimeout: 20 * time.Second}
}

func TestPushIntoRegistry(t *testing.T) {
	tb := makeBundle(t, 64<<10)
	reg := registrytest.New(t)
	rec := newRecorder(nil)
	var progress bytes.Buffer
	o := opts(reg.Host, rec)
	o.Progress = &progress
	sum, err := push.Push(context.Background(), tb.store, o)
	if err != nil {
		t.Fatalf("push: %v\n%s", err, progress.String())
	}
	t.Log(sum)
	verifyPulled(t, reg.Host, tb, perRegistry)

	if sum.Images != 5 || sum.Charts != 1 {
		t.Errorf("images %d charts %d, want 5 and 1", sum.Images, sum.Charts)
	}
	// Every distinct blob is sent exactly once; the base layer shared by
	// three repositories is mounted into the other two.
	ups := rec.uploads()
	for d := range tb.blobs {
		if ups[d.String()] != 1 {
			t.Errorf("blob %s uploaded %d times, want 1", d, ups[d.String()])
		}
	}
	if int(sum.BlobsSent) != len(tb.blobs) || len(ups) != len(tb.blobs) {
		t.Errorf("sent %d blobs (%d confirmed), bundle has %d distinct", sum.BlobsSent, len(ups), len(tb.blobs))
	}
	if sum.BlobsMounted < 2 || rec.count("POST mount") < 2 {
		t.Errorf("mounted %d (%d mount requests), want the shared base mounted at least twice", sum.BlobsMounted, rec.count("POST mount"))
	}
	for _, want := range []string{
		"push docker.io/library/nginx:1.25 (",
		"push registry.k8s.io/ingress-nginx/controller:v1.4.0@sha256:",
		"push docker.io/bitnamicharts/mariadb:18.2.0+1 (",
		"(6/6): done in ",
	} {
		if !strings.Contains(progress.String(), want) {
			t.Errorf("progress lacks %q:\n%s", want, progress.String())
		}
	}
	if sum.Requests == 0 || sum.Throughput <= 0 || sum.BytesSent == 0 {
		t.Errorf("summary counters not filled: %+v", sum)
	}
}

func TestRepushSendsNoBlob(t *testing.T) {
	tb := makeBundle(t, 32<<10)
	reg := registrytest.New(t)
	if _, err := push.Push(context.Background(), tb.store, opts(reg.Host, nil)); err != nil {
		t.Fatal(err)
	}
	rec := newRecorder(nil)
	sum, err := push.Push(context.Background(), tb.store, opts(reg.Host, rec))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"POST upload", "PATCH upload", "PUT upload", "POST mount", "PUT manifest", "HEAD blob"} {
		if n := rec.count(k); n != 0 {
			t.Errorf("re-push made %d %q requests, want 0", n, k)
		}
	}
	if sum.BlobsSent != 0 || sum.ManifestsSent != 0 || sum.TagsSet != 0 {
		t.Errorf("re-push summary: %+v", sum)
	}
	// One HEAD per artifact for its digest, one per tag, plus the ping.
	if sum.Requests > int64(2*len(tb.entries)+2) {
		t.Errorf("re-push made %d requests for %d artifacts", sum.Requests, len(tb.entries))
	}
	t.Logf("re-push: %d requests in %s", sum.Requests, sum.Duration)
}

// Missing names what a registry lacks of the bundle, by digest, before a
// push (everything), after an interrupted one (the rest) and after a
// whole one (nothing), with only HEAD requests.
func TestMissing(t *testing.T) {
	tb := makeBundle(t, 8<<10)
	reg := registrytest.New(t)
	ctx := context.Background()
	missing, err := push.Missing(ctx, tb.store, opts(reg.Host, nil))
	if err != nil {
		t.Fatal(err)
	}
	if len(missing) != len(tb.entries) {
		t.Errorf("before a push: missing %v, want all %d artifacts", missing, len(tb.entries))
	}
	o := opts(reg.Host, nil)
	o.Kinds = []bundle.Kind{bundle.KindChart}
	if _, err := push.Push(ctx, tb.store, o); err != nil {
		t.Fatal(err)
	}
	o.Kinds = nil
	missing, err = push.Missing(ctx, tb.store, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(missing) != len(tb.entries)-1 || slices.Contains(missing, "docker.io/bitnamicharts/mariadb:18.2.0+1") {
		t.Errorf("after pushing the chart: missing %v", missing)
	}
	if _, err := push.Push(ctx, tb.store, opts(reg.Host, nil)); err != nil {
		t.Fatal(err)
	}
	rec := newRecorder(nil)
	missing, err = push.Missing(ctx, tb.store, opts(reg.Host, rec))
	if err != nil || len(missing) != 0 {
		t.Errorf("after the push: missing %v, %v", missing, err)
	}
	if n := rec.count("HEAD manifest"); n != len(tb.entries) {
		t.Errorf("%d HEAD requests for %d artifacts", n, len(tb.entries))
	}
	if len(rec.uploads()) != 0 || rec.count("PUT manifest") != 0 {
		t.Error("Missing wrote to the registry")
	}
}

func TestInterruptedPushResumes(t *testing.T) {
	tb := makeBundle(t, 64<<10)
	reg := registrytest.New(t)

	// First run: cancelled as soon as 3 blobs have arrived.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	first := newRecorder(nil)
	first.after = func(_, uploaded int) {
		if uploaded >= 3 {
			cancel()
		}
	}
	o := opts(reg.Host, first)
	o.Jobs = 2
	_, err := push.Push(ctx, tb.store, o)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted push: err = %v, want context.Canceled", err)
	}
	arrived := first.uploads()
	if len(arrived) < 3 || len(arrived) >= len(tb.blobs) {
		t.Fatalf("first run uploaded %d of %d blobs; the test wants an interruption half-way", len(arrived), len(tb.blobs))
	}

	second := newRecorder(nil)
	sum, err := push.Push(context.Background(), tb.store, opts(reg.Host, second))
	if err != nil {
		t.Fatalf("resumed push: %v", err)
	}
	again := second.uploads()
	for d := range again {
		if arrived[d] > 0 {
			t.Errorf("blob %s sent again after it had arrived", d)
		}
	}
	// Across both runs no blob travelled twice. (A blob whose answer the
	// cancellation cut off is not in arrived, but the registry has it: the
	// second run finds it with HEAD, and verifyPulled checks it below.)
	for d := range tb.blobs {
		if n := arrived[d.String()] + again[d.String()]; n > 1 {
			t.Errorf("blob %s sent %d times over both runs", d, n)
		}
	}
	if sum.BlobsSkipped == 0 {
		t.Errorf("resumed push skipped nothing: %+v", sum)
	}
	verifyPulled(t, reg.Host, tb, perRegistry)
	t.Logf("first run: %d blobs; resumed: %d sent, %d skipped, %d mounted", len(arrived), sum.BlobsSent, sum.BlobsSkipped, sum.BlobsMounted)
}

func TestTransientErrorsAreRetried(t *testing.T) {
	isBlobPut := func(r *http.Request) bool {
		return r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/blobs/uploads/")
	}
	isManifest := func(r *http.Request) bool { return strings.Contains(r.URL.Path, "/manifests/") }
	for name, wrap := range map[string]func(http.Handler) http.Handler{
		"503 on blob uploads":      registrytest.Fail(isBlobPut, 3, http.StatusServiceUnavailable),
		"reset on blob uploads":    registrytest.Fail(isBlobPut, 2, 0),
		"429 on manifests":         registrytest.Fail(isManifest, 2, http.StatusTooManyRequests),
		"500 on the first request": registrytest.Fail(nil, 1, http.StatusInternalServerError),
	} {
		t.Run(name, func(t *testing.T) {
			tb := makeBundle(t, 16<<10)
			reg := registrytest.New(t, registrytest.WithWrapper(wrap))
			sum, err := push.Push(context.Background(), tb.store, opts(reg.Host, nil))
			if err != nil {
				t.Fatalf("push: %v", err)
			}
			if sum.Retries == 0 && !strings.Contains(name, "first request") {
				t.Errorf("no retries counted: %+v", sum)
			}
			verifyPulled(t, reg.Host, tb, perRegistry)
		})
	}

	t.Run("persistent 503 returns the registry's error", func(t *testing.T) {
		tb := makeBundle(t, 1024)
		reg := registrytest.New(t, registrytest.WithWrapper(registrytest.Fail(isBlobPut, 1000, http.StatusServiceUnavailable)))
		o := opts(reg.Host, nil)
		o.Retry = retry.Policy{Attempts: 2, Base: time.Millisecond}
		_, err := push.Push(context.Background(), tb.store, o)
		if err == nil || !strings.Contains(err.Error(), "503 Service Unavailable") {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestChunkedUpload(t *testing.T) {
	tb := makeBundle(t, 200<<10)
	reg := registrytest.New(t)
	rec := newRecorder(nil)
	o := opts(reg.Host, rec)
	o.ChunkThreshold, o.ChunkSize = 100<<10, 48<<10
	sum, err := push.Push(context.Background(), tb.store, o)
	if err != nil {
		t.Fatal(err)
	}
	verifyPulled(t, reg.Host, tb, perRegistry)
	if sum.Chunks == 0 || rec.count("PATCH upload") != int(sum.Chunks) {
		t.Fatalf("chunks %d, PATCH requests %d", sum.Chunks, rec.count("PATCH upload"))
	}
}

func TestMappings(t *testing.T) {
	tb := makeBundle(t, 1024)
	reg := registrytest.New(t)
	o := opts(reg.Host, nil)
	o.Mapping = push.Mapping{Project: "kpaas"}
	sum, err := push.Push(context.Background(), tb.store, o)
	if err != nil {
		t.Fatal(err)
	}
	verifyPulled(t, reg.Host, tb, func(ref string) (string, string) {
		repo, tag := perRegistry(ref)
		_, path, _ := strings.Cut(repo, "/")
		return "kpaas/" + path, tag
	})
	if got := sum.Results[0].Target; !strings.HasPrefix(got, reg.Host+"/kpaas/") {
		t.Errorf("target %s", got)
	}

	checkPlaces(t, reg.Host, o.Mapping, sum)

	o.Mapping = push.Mapping{Prefix: "mirror/k-paas"}
	if sum, err = push.Push(context.Background(), tb.store, o); err != nil {
		t.Fatal(err)
	}
	checkPlaces(t, reg.Host, o.Mapping, sum)
	if _, _, err := o.Mapping.Place("docker.io/Library/nginx:1.25"); err == nil || !strings.Contains(err.Error(), `"Library"`) {
		t.Errorf("Place of an invalid reference: %v", err)
	}
	verifyPulled(t, reg.Host, tb, func(ref string) (string, string) {
		repo, tag := perRegistry(ref)
		_, path, _ := strings.Cut(repo, "/")
		return "mirror/k-paas/" + path, tag
	})
}

// Finished is called once per artifact, with the count ended so far.
func TestFinishedCallback(t *testing.T) {
	tb := makeBundle(t, 1024)
	reg := registrytest.New(t)
	o := opts(reg.Host, nil)
	var mu sync.Mutex
	ended := map[int]string{}
	o.Finished = func(r push.ArtifactResult, n, total int) {
		mu.Lock()
		defer mu.Unlock()
		if total != len(tb.entries) {
			t.Errorf("total %d, the bundle has %d", total, len(tb.entries))
		}
		if _, dup := ended[n]; dup {
			t.Errorf("two artifacts ended as number %d", n)
		}
		ended[n] = r.Ref
	}
	sum, err := push.Push(context.Background(), tb.store, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(ended) != len(sum.Results) || len(ended) != len(tb.entries) {
		t.Fatalf("%d calls for %d results of %d entries", len(ended), len(sum.Results), len(tb.entries))
	}
	for i := 1; i <= len(ended); i++ {
		if ended[i] == "" {
			t.Errorf("no call with %d ended", i)
		}
	}
}

// checkPlaces: Mapping.Place names where the push put every artifact.
func checkPlaces(t *testing.T, host string, m push.Mapping, sum push.Summary) {
	t.Helper()
	if len(sum.Results) == 0 {
		t.Fatal("the push has no results")
	}
	for _, r := range sum.Results {
		repo, tag, err := m.Place(r.Ref)
		if err != nil {
			t.Fatalf("Place(%s): %v", r.Ref, err)
		}
		want := host + "/" + repo
		if tag != "" {
			want += ":" + tag
		}
		if want += "@" + r.Digest; r.Target != want {
			t.Errorf("%s: pushed to %s, Place says %s", r.Ref, r.Target, want)
		}
	}
}

func TestCorruptBundleBlobIsNotPushed(t *testing.T) {
	tb := makeBundle(t, 8<<10)
	reg := registrytest.New(t)
	// Flip one byte of nginx's own (last) layer.
	var victim string
	for _, e := range tb.entries {
		if e.Ref == "docker.io/library/nginx:1.25" {
			m, err := v1.ParseManifest(bytes.NewReader(mustRead(t, tb.store, e.Descriptor)))
			if err != nil {
				t.Fatal(err)
			}
			victim = m.Layers[len(m.Layers)-1].Digest.String()
		}
	}
	path := tb.store.Path("blobs/sha256/" + strings.TrimPrefix(victim, "sha256:"))
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	rec := newRecorder(nil)
	sum, err := push.Push(context.Background(), tb.store, opts(reg.Host, rec))
	var de *bundle.DigestError
	if !errors.As(err, &de) && !strings.Contains(err.Error(), "content has digest") {
		t.Fatalf("err = %v, want a digest error", err)
	}
	if rec.uploads()[victim] != 0 {
		t.Fatalf("the corrupt blob reached the registry")
	}
	failed := 0
	for _, r := range sum.Results {
		if r.Error != "" {
			failed++
		}
	}
	if failed != 1 {
		t.Errorf("%d artifacts failed, want only nginx: %+v", failed, sum.Results)
	}
}

func TestOptionsValidate(t *testing.T) {
	err := push.Options{Mapping: push.Mapping{Project: "Bad Name", Prefix: "x"}, Password: "p"}.Validate()
	for _, want := range []string{"no target registry", "exclude each other", "not a valid project name", "password without a user name"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to mention %q", err, want)
		}
	}
}
