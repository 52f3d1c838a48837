package charts_test

import (
	"fmt"
	"log"

	"kpaas.dev/appliance/builder/charts"
)

func Example() {
	c, err := charts.Load("testdata/demo/charts/cache")
	if err != nil {
		log.Fatal(err)
	}
	objs, err := charts.Render(c, charts.RenderOptions{
		ReleaseName: "shop",
		KubeVersion: "v1.31.2",
		Values:      map[string]any{"image": map[string]any{"tag": "7.4"}},
	})
	if err != nil {
		log.Fatal(err)
	}
	refs, err := charts.Images(c, objs)
	if err != nil {
		log.Fatal(err)
	}
	for _, r := range refs {
		fmt.Println(r.Ref)
		for _, s := range r.Sources {
			fmt.Println("   ", s)
		}
	}
	// Output:
	// docker.io/library/redis:7.2
	//     cache/Chart.yaml annotations[artifacthub.io/images][0].image
	// docker.io/library/redis:7.4
	//     cache/templates/deployment.yaml (Deployment/shop-cache) spec.template.spec.containers[0].image
	// docker.io/oliver006/redis_exporter:v1.62.0
	//     cache/Chart.yaml annotations[artifacthub.io/images][1].image
	//     cache/templates/deployment.yaml (Deployment/shop-cache) spec.template.spec.containers[1].image
}

func ExampleNormalize() {
	for _, image := range []string{"nginx", "nginx:1.25", "bitnami/redis:7", "registry.k8s.io/pause:3.10"} {
		ref, err := charts.Normalize(image)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(ref)
	}
	// Output:
	// docker.io/library/nginx:latest
	// docker.io/library/nginx:1.25
	// docker.io/bitnami/redis:7
	// registry.k8s.io/pause:3.10
}
