package push_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"kpaas.dev/appliance/internal/harbor"
	"kpaas.dev/appliance/internal/harbor/harborlocal"
	"kpaas.dev/appliance/internal/push"
)

// TestRealHarbor pushes bundles into a real Harbor built from its sources
// (internal/harbor/harborlocal: core, registry, registryctl, jobservice,
// with PostgreSQL and Redis), the way the agent's harbor phase and
// `kpaas push --harbor` do. The subtests share one Harbor and run in order.
func TestRealHarbor(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real Harbor")
	}
	h := harborlocal.Start(t)
	ctx := context.Background()
	api, err := harbor.New(h.URL, harbor.WithBasicAuth(h.Admin, h.Password))
	if err != nil {
		t.Fatal(err)
	}
	auth := remote.WithAuth(&authn.Basic{Username: h.Admin, Password: h.Password})
	harborOpts := func(rt http.RoundTripper) push.Options {
		o := opts(h.Host, rt)
		o.Harbor, o.Username, o.Password = true, h.Admin, h.Password
		return o
	}
	tb := makeBundle(t, 64<<10)

	t.Run("projects, digests and cross-project mounts", func(t *testing.T) {
		o := harborOpts(nil)
		o.PublicProjects = true
		var progress strings.Builder
		o.Progress = &progress
		sum, err := push.Push(ctx, tb.store, o)
		if err != nil {
			t.Fatalf("push: %v\n%s", err, h.Logs("core"))
		}
		// Pushed as a robot account of its own, removed afterwards.
		if !strings.Contains(progress.String(), "harbor: pushing as robot account robot$"+push.RobotPrefix) {
			t.Errorf("the push did not make a robot account:\n%s", progress.String())
		}
		if left, err := api.Robots(ctx, push.RobotPrefix); err != nil || len(left) != 0 {
			t.Errorf("robot accounts left after the push: %v (%v)", left, err)
		}
		want := []string{"docker.io", "quay.io", "registry.k8s.io"}
		if !slices.Equal(sum.Projects, want) {
			t.Errorf("projects created %v, want %v", sum.Projects, want)
		}
		for _, p := range want {
			got, err := api.GetProject(ctx, p)
			if err != nil {
				t.Fatal(err)
			}
			if got.Metadata.Public != "true" {
				t.Errorf("project %s public = %q", p, got.Metadata.Public)
			}
		}
		// The base layer nginx (docker.io) shares with the ingress
		// controller (registry.k8s.io) crosses projects by a mount.
		if sum.BlobsMounted == 0 {
			t.Errorf("no blob was mounted across repositories: %+v", sum)
		}
		verifyPulled(t, h.Host, tb, perRegistry, auth)
		// Harbor's own view: the artifact of every tag has the bundle's digest.
		for _, e := range tb.entries {
			repo, tag := perRegistry(e.Ref)
			if tag == "" {
				continue
			}
			project, rest, _ := strings.Cut(repo, "/")
			d, err := artifactDigest(ctx, api, project, rest, tag)
			if err != nil {
				t.Fatalf("%s: %v", e.Ref, err)
			}
			if d != e.Descriptor.Digest.String() {
				t.Errorf("Harbor lists %s:%s as %s, the bundle has %s", repo, tag, d, e.Descriptor.Digest)
			}
		}
		t.Logf("first push: %d blobs sent, %d mounted, %d requests in %s", sum.BlobsSent, sum.BlobsMounted, sum.Requests, sum.Duration)
	})

	t.Run("re-push is a no-op", func(t *testing.T) {
		sum, err := push.Push(ctx, tb.store, harborOpts(nil))
		if err != nil {
			t.Fatal(err)
		}
		if sum.BlobsSent != 0 || sum.ManifestsSent != 0 || len(sum.Projects) != 0 {
			t.Errorf("re-push sent %d blobs and %d manifests, created %v", sum.BlobsSent, sum.ManifestsSent, sum.Projects)
		}
		t.Logf("re-push: %d requests in %s", sum.Requests, sum.Duration)
	})

	t.Run("chunked uploads", func(t *testing.T) {
		big := makeBundle(t, 200<<10)
		o := harborOpts(nil)
		o.Mapping = push.Mapping{Project: "chunked"}
		o.ChunkThreshold, o.ChunkSize = 64<<10, 48<<10
		sum, err := push.Push(ctx, big.store, o)
		if err != nil {
			t.Fatal(err)
		}
		if sum.Chunks == 0 {
			t.Fatalf("no chunked upload: %+v", sum)
		}
		verifyPulled(t, h.Host, big, inProject("chunked"), auth)
	})

	t.Run("interrupted push resumes", func(t *testing.T) {
		rb := makeBundle(t, 64<<10)
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		first := newRecorder(nil)
		first.after = func(_, uploaded int) {
			if uploaded >= 3 {
				cancel()
			}
		}
		o := harborOpts(first)
		o.Mapping, o.Jobs = push.Mapping{Project: "resume"}, 2
		if _, err := push.Push(cctx, rb.store, o); !errors.Is(err, context.Canceled) {
			t.Fatalf("interrupted push: err = %v, want context.Canceled", err)
		}
		arrived := first.uploads()
		second := newRecorder(nil)
		o = harborOpts(second)
		o.Mapping = push.Mapping{Project: "resume"}
		sum, err := push.Push(ctx, rb.store, o)
		if err != nil {
			t.Fatalf("resumed push: %v", err)
		}
		for d := range second.uploads() {
			if arrived[d] > 0 {
				t.Errorf("blob %s sent again after Harbor had it", d)
			}
		}
		if sum.BlobsSkipped == 0 {
			t.Errorf("resumed push skipped nothing: %+v", sum)
		}
		verifyPulled(t, h.Host, rb, inProject("resume"), auth)
	})

	t.Run("Harbor's errors are shown", func(t *testing.T) {
		eb := makeBundle(t, 8<<10)

		o := harborOpts(nil)
		o.Password = "wrong-" + h.Password
		_, err := push.Push(ctx, eb.store, o)
		if err == nil || !strings.Contains(strings.ToLower(err.Error()), "unauthorized") {
			t.Errorf("wrong password: err = %v, want Harbor's 401", err)
		}

		// Not asked to create projects: Harbor refuses a push into a
		// project that does not exist, and says which.
		o = harborOpts(nil)
		o.Harbor, o.Mapping = false, push.Mapping{Project: "no-such-project"}
		_, err = push.Push(ctx, eb.store, o)
		if err == nil || !strings.Contains(err.Error(), "no-such-project") {
			t.Errorf("missing project: err = %v, want it named", err)
		}

		// A project whose quota is smaller than the bundle.
		limit := int64(10 << 10)
		if err := api.CreateProject(ctx, harbor.ProjectReq{ProjectName: "tiny", StorageLimit: &limit}); err != nil {
			t.Fatal(err)
		}
		o = harborOpts(nil)
		o.Mapping = push.Mapping{Project: "tiny"}
		_, err = push.Push(ctx, eb.store, o)
		if err == nil || !strings.Contains(err.Error(), "exceed the configured upper limit") {
			t.Errorf("over quota: err = %v, want Harbor's quota message", err)
		}
	})
}

// inProject is Mapping{Project: p}: the source registry is replaced by p.
func inProject(p string) func(ref string) (string, string) {
	return func(ref string) (string, string) {
		repo, tag := perRegistry(ref)
		_, rest, _ := strings.Cut(repo, "/")
		return p + "/" + rest, tag
	}
}

// artifactDigest asks Harbor's API for the digest of repo:tag in project.
func artifactDigest(ctx context.Context, api *harbor.Client, project, repo, tag string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	a, err := api.Artifact(ctx, project, repo, tag)
	if err != nil {
		return "", err
	}
	return a.Digest, nil
}
