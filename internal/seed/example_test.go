package seed_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"

	"kpaas.dev/appliance/internal/bundle"
	"kpaas.dev/appliance/internal/seed"
)

// Serve a bundle and ask it what it holds. containerd would pull
// registry.k8s.io/pause:3.10 from it as /v2/pause/manifests/3.10?ns=registry.k8s.io.
func ExampleNew() {
	dir, _ := os.MkdirTemp("", "bundle-")
	defer os.RemoveAll(dir)
	store, _ := bundle.Create(dir)
	img, _ := random.Image(512, 1)
	d, _ := store.NewWriter().WriteImage(context.Background(), img)
	store.SetEntries([]v1.Descriptor{bundle.Annotate(d, bundle.KindImage, "registry.k8s.io/pause:3.10")})

	srv, err := seed.New(store)
	if err != nil {
		log.Fatal(err)
	}
	ts := httptest.NewServer(srv) // kpaas serve and the agent use seed.ListenAndServe on 127.0.0.1
	defer ts.Close()

	for _, path := range []string{"/v2/_catalog", "/v2/pause/tags/list?ns=registry.k8s.io"} {
		resp, err := http.Get(ts.URL + path)
		if err != nil {
			log.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Println(string(b))
	}
	// Output:
	// {"repositories":["registry.k8s.io/pause"]}
	// {"name":"pause","tags":["3.10"]}
}
