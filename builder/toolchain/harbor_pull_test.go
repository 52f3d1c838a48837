package toolchain

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"kpaas.dev/appliance/internal/bundle"
	"kpaas.dev/appliance/internal/containerd"
	"kpaas.dev/appliance/internal/harbor"
	"kpaas.dev/appliance/internal/harbor/harborlocal"
	"kpaas.dev/appliance/internal/push"
	"kpaas.dev/appliance/internal/seed"
	"kpaas.dev/appliance/internal/testenv"
)

// TestContainerdPullsThroughHarbor checks the registry configuration every
// node gets (internal/containerd) with the built containerd, a real Harbor
// built from its sources and the node's seed: an image Harbor holds is
// pulled from Harbor (the seed serves nothing), an image Harbor lacks comes
// from the seed, and with Harbor down pulls still work from the seed.
func TestContainerdPullsThroughHarbor(t *testing.T) {
	_, bin := builtToolchain(t)
	ctx := context.Background()
	h := harborlocal.Start(t)

	// The node's bundle holds alpha and beta; Harbor gets alpha only.
	const alpha, beta = "docker.io/library/alpha:1", "registry.k8s.io/beta:1"
	alphaImg := randomImage(t)
	node := testStore(t, map[string]v1.Image{alpha: alphaImg, beta: randomImage(t)})
	partial := testStore(t, map[string]v1.Image{alpha: alphaImg})
	if _, err := push.Push(ctx, partial, push.Options{Registry: h.URL, Insecure: true, Harbor: true, PublicProjects: true,
		Username: h.Admin, Password: h.Password}); err != nil {
		t.Fatalf("push into Harbor: %v", err)
	}

	// The seed over the node's bundle, recording what it serves.
	var seedLog testenv.LockedBuffer
	srv, err := seed.New(node, seed.WithLogger(slog.New(slog.NewTextHandler(&seedLog, nil))))
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	served := func(repo string) bool {
		return strings.Contains(seedLog.String(), "repository="+repo)
	}

	hosts := filepath.Join(t.TempDir(), "certs.d")
	if err := containerd.WriteHostsDir(hosts, []string{"docker.io", "registry.k8s.io"}, h.URL, ts.URL); err != nil {
		t.Fatal(err)
	}
	ctr := startContainerd(t, bin)
	pull := func(ref string) {
		t.Helper()
		if _, err := ctr("images", "pull", "--hosts-dir", hosts, ref); err != nil {
			t.Fatal(err)
		}
	}

	pull(alpha)
	if served("docker.io/library/alpha") {
		t.Errorf("the seed served %s, which Harbor holds:\n%s", alpha, seedLog.String())
	}
	pull(beta)
	if !served("registry.k8s.io/beta") {
		t.Errorf("%s is not in Harbor and the seed did not serve it:\n%s", beta, seedLog.String())
	}

	// A user's own image in a private project of Harbor, pushed with the
	// admin's credentials as `docker login` + `docker push` would: pulled
	// by Harbor's own name through the hosts.toml of Harbor's host (on a
	// node it is what makes containerd use plain HTTP; on 127.0.0.1
	// containerd would fall back to it anyway), with the credentials a
	// pod's imagePullSecret gives, and refused without them.
	hc, err := harbor.New(h.URL, harbor.WithBasicAuth(h.Admin, h.Password))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hc.EnsureProject(ctx, "apps", false); err != nil {
		t.Fatal(err)
	}
	own, err := name.NewTag(h.Host+"/apps/web:1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(own, randomImage(t), remote.WithAuth(&authn.Basic{Username: h.Admin, Password: h.Password})); err != nil {
		t.Fatalf("pushing the user's image: %v", err)
	}
	if out, err := ctr("images", "pull", "--hosts-dir", hosts, own.String()); err == nil {
		t.Errorf("a private project's image was pulled without credentials:\n%s", out)
	}
	if _, err := ctr("images", "pull", "--hosts-dir", hosts, "--user", h.Admin+":"+h.Password, own.String()); err != nil {
		t.Fatal(err)
	}

	// Harbor down: its core (the registry's front) stops answering.
	h.Stop("core")
	if _, err := ctr("images", "rm", "--sync", alpha); err != nil {
		t.Fatal(err)
	}
	pull(alpha)
	if !served("docker.io/library/alpha") {
		t.Errorf("with Harbor down, %s did not come from the seed:\n%s", alpha, seedLog.String())
	}
}

func randomImage(t *testing.T) v1.Image {
	img, err := random.Image(4096, 2)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// testStore writes a bundle holding the images under their references.
func testStore(t *testing.T, images map[string]v1.Image) *bundle.Store {
	t.Helper()
	s, err := bundle.Create(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	w := s.NewWriter()
	var ds []v1.Descriptor
	for ref, img := range images {
		d, err := w.WriteImage(context.Background(), img)
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, bundle.Annotate(d, bundle.KindImage, ref))
	}
	if err := s.SetEntries(ds); err != nil {
		t.Fatal(err)
	}
	return s
}
