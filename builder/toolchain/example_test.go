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
//	phase kube (1/12): done in 25m3.2s
//	phase etcd (2/12): already done
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
