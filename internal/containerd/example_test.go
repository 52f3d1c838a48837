package containerd_test

import (
	"fmt"

	"kpaas.dev/appliance/internal/containerd"
)

// The hosts.toml that sends pulls of Docker Hub images to the cluster's
// Harbor first (its project docker.io), then to the node's seed.
func ExampleHostsTOML() {
	fmt.Print(string(containerd.HostsTOML("docker.io", containerd.Mirrors("docker.io", "http://10.42.0.11:30002", "http://127.0.0.1:5000")...)))
	// Output:
	// # Written by kpaas: pulls of docker.io images ask the mirrors below first, in order.
	// server = "https://registry-1.docker.io"
	//
	// [host."http://10.42.0.11:30002/v2/docker.io"]
	//   capabilities = ["pull", "resolve"]
	//   override_path = true
	//
	// [host."http://127.0.0.1:5000"]
	//   capabilities = ["pull", "resolve"]
}
