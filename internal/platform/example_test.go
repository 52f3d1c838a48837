package platform_test

import (
	"fmt"

	"kpaas.dev/appliance/internal/platform"
)

func ExampleLevels() {
	levels, err := platform.Levels([]platform.Node{
		{Name: "vault", DependsOn: []string{"storage", "ingress-nginx"}},
		{Name: "storage"},
		{Name: "ingress-nginx"},
		{Name: "harbor", DependsOn: []string{"storage"}},
	})
	fmt.Println(levels, err)
	// Output: [[ingress-nginx storage] [harbor vault]] <nil>
}

func ExampleExpandValues() {
	lookup := platform.Lookup(
		map[string]string{"firstControlPlaneAddress": "10.0.0.11", "harborPort": "30002"},
		map[string]string{"harbor-admin-password": "s3cret"})
	v, err := platform.ExpandValues(map[string]any{
		"externalURL":         "http://${fact:firstControlPlaneAddress}:${fact:harborPort}",
		"nodePort":            "${fact:harborPort}",
		"harborAdminPassword": "${secret:harbor-admin-password}",
	}, lookup)
	fmt.Println(v["externalURL"], v["nodePort"], v["harborAdminPassword"], err)
	// Output: http://10.0.0.11:30002 30002 s3cret <nil>
}
