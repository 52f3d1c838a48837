package containerd_test

import (
	"fmt"

	"kpaas.dev/appliance/internal/containerd"
)

// The hosts.toml that sends pulls of Docker Hub images to the node's seed.
func ExampleHostsTOML() {
	fmt.Print(string(containerd.HostsTOML("docker.io", "http://127.0.0.1:5000")))
	// Output:
	// # Written by kpaas: pulls of docker.io images ask the mirror below first.
	// server = "https://registry-1.docker.io"
	//
	// [host."http://127.0.0.1:5000"]
	//   capabilities = ["pull", "resolve"]
}
