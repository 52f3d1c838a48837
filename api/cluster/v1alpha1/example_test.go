package v1alpha1_test

import (
	"fmt"

	"kpaas.dev/appliance/api/cluster/v1alpha1"
)

func ExampleParse() {
	config := []byte(`apiVersion: kpaas.dev/v1alpha1
kind: Cluster
metadata: {name: site}
controlPlaneEndpoint: {host: 10.0.0.11}
nodes:
  - {name: cp1, role: control-plane, macs: ["52:54:00:00:00:01"], address: 10.0.0.11/24}
  - {name: w1, role: worker, macs: ["52:54:00:00:00:02"], address: 10.0.0.21/24, gateway: 10.0.0.1}
`)
	c, err := v1alpha1.Parse("cluster.yaml", config)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(c.ControlPlaneEndpoint, c.Networking.PodCIDR, c.Networking.ProxyMode, c.FirstControlPlane().Name)
	// Output: 10.0.0.11:6443 10.233.64.0/18 ipvs cp1
}

func ExampleParse_problems() {
	config := []byte(`apiVersion: kpaas.dev/v1alpha1
kind: Cluster
metadata: {name: site}
controlPlaneEndpoint: {host: 10.0.0.11}
nodes:
  - name: cp1
    role: control-plane
    address: 10.0.0.11/24
  - name: w1
    role: wroker
    address: 10.0.0.11/24
    gateway: 10.0.1.1
`)
	_, err := v1alpha1.Parse("cluster.yaml", config)
	fmt.Println(err)
	// Output:
	// cluster.yaml:10:11: nodes[1].role: must be "control-plane" or "worker", not "wroker"
	// cluster.yaml:11:14: nodes[1].address: duplicate address 10.0.0.11 (same as nodes[0])
	// cluster.yaml:12:14: nodes[1].gateway: 10.0.1.1 is outside the node's network 10.0.0.0/24
}

func ExampleCluster_FindNode() {
	c, err := v1alpha1.ParseFile("testdata/site.yaml")
	if err != nil {
		fmt.Println(err)
		return
	}
	// The agent passes the machine's MACs, its hostname and kpaas.node=.
	n, err := c.FindNode([]string{"52:54:00:00:01:02"}, "debian", "")
	fmt.Println(n.Name, n.Role, err)
	_, err = c.FindNode([]string{"52:54:00:99:99:99"}, "debian", "")
	fmt.Println(err)
	// Output:
	// w1 worker <nil>
	// cluster site: no node matches this machine (MACs tried: 52:54:00:99:99:99; hostname "debian"; kpaas.node=""): add one to cluster.yaml with one of these MACs, or boot with kpaas.node=NAME
}
