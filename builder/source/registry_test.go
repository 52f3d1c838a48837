package source_test

import (
	"context"
	"encoding/base64"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"kpaas.dev/appliance/builder/source"
)

// TestRegistryAuthFromDockerConfig: credentials come from the docker
// config file (DOCKER_CONFIG), as docker, podman and crane use it.
func TestRegistryAuthFromDockerConfig(t *testing.T) {
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "kpaas" || p != "s3cret" {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")

	img, _ := random.Image(4096, 2)
	tag, _ := name.NewTag(host + "/team/app:1")
	if err := remote.Write(tag, img, remote.WithAuth(&authn.Basic{Username: "kpaas", Password: "s3cret"})); err != nil {
		t.Fatal(err)
	}
	want, _ := img.Digest()

	r := mustRef(t, host+"/team/app:1")
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	if _, err := (&source.Registry{}).Resolve(context.Background(), r); err == nil {
		t.Fatal("resolved without credentials")
	}

	dir := t.TempDir()
	auth := base64.StdEncoding.EncodeToString([]byte("kpaas:s3cret"))
	cfg := `{"auths":{"` + host + `":{"auth":"` + auth + `"}}}`
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONFIG", dir)
	got, err := (&source.Registry{}).Resolve(context.Background(), r)
	if err != nil {
		t.Fatalf("with credentials in DOCKER_CONFIG: %v", err)
	}
	if d, _ := got.Digest(); d != want {
		t.Errorf("resolved %s, want %s", d, want)
	}
	// Layers come through the authenticated raw fetch too.
	layers, err := got.Image.Layers()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := layers[0].Compressed()
	if err != nil {
		t.Fatalf("fetching a layer with credentials: %v", err)
	}
	rc.Close()
}
