package toolchain_test

import (
	"context"
	"fmt"
	"os"

	"kpaas.dev/appliance/builder/toolchain"
)

// Build everything (from the cache when possible) and write the mirror that
// `kpaas bake --mirror out/mirror` reads. Progress lines go to stderr:
//
//	toolchain kube (1/13): done in 25m3s
//	toolchain etcd (2/13): cached
func ExampleBuild() {
	res, err := toolchain.Build(context.Background(), toolchain.Options{
		MirrorDir: "out/mirror",
		Progress:  os.Stderr,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	for _, img := range res.Images {
		fmt.Println(img.Digest, img.Ref)
	}
}
