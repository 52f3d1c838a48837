package clustersecrets_test

import (
	"fmt"
	"os"
	"time"

	"kpaas.dev/appliance/api/cluster/v1alpha1"
	"kpaas.dev/appliance/internal/clustersecrets"
)

func Example() {
	c, err := v1alpha1.ParseFile("../../api/cluster/v1alpha1/testdata/site.yaml")
	if err != nil {
		fmt.Println(err)
		return
	}
	dir, _ := os.MkdirTemp("", "site")
	defer os.RemoveAll(dir)
	if err := clustersecrets.Generate(dir, c, time.Now()); err != nil {
		fmt.Println(err)
		return
	}
	// What the agent does on a worker with its config disk at dir.
	s, err := clustersecrets.Load(dir)
	if err != nil {
		fmt.Println(err)
		return
	}
	hash, _ := s.CAHash()
	_, err = s.Token()
	fmt.Println(len(hash), err, clustersecrets.ForRole(v1alpha1.RoleWorker))
	// Output: 71 <nil> [pki/ca.crt token]
}
