package push_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"kpaas.dev/appliance/internal/bundle"
	"kpaas.dev/appliance/internal/push"
)

// Push a bundle into Harbor, one project per source registry
// (docker.io/library/nginx:1.25 → harbor.example/docker.io/library/nginx:1.25).
func ExamplePush() {
	store, err := bundle.Open("/media/kpaas/bundle")
	if err != nil {
		log.Fatal(err)
	}
	sum, err := push.Push(context.Background(), store, push.Options{
		Registry:       "harbor.example",
		Harbor:         true,
		PublicProjects: true,
		Username:       "admin",
		Password:       os.Getenv("KPAAS_REGISTRY_PASSWORD"),
		Progress:       os.Stderr,
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(sum)
}
