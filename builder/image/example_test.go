package image_test

import (
	"context"
	"fmt"
	"os"

	"kpaas.dev/appliance/builder/disk"
	"kpaas.dev/appliance/builder/image"
	"kpaas.dev/appliance/internal/progress"
)

// Build writes a raw disk and an ISO from a baked bundle with an OS image.
func ExampleBuild() {
	sum, err := image.Build(context.Background(), image.Options{
		Bundle:   "out/bundle",
		Out:      "out/node", // out/node.raw, out/node.iso
		Formats:  []disk.Format{disk.Raw, disk.ISO},
		Config:   "cluster.yaml", // on the ESP at /kpaas/cluster.yaml
		Progress: progress.New(os.Stderr),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, o := range sum.Outputs {
		fmt.Println(o.Path, o.Size)
	}
}
