package kubetest_test

import (
	"testing"

	"kpaas.dev/appliance/internal/kubetest"
)

// A test gets a real API server (etcd + kube-apiserver built by
// `kpaas toolchain build`) and talks to it with the built kubectl, the REST
// API (env.HTTPClient, env.Host) or any client given env.Kubeconfig.
func ExampleStart() {
	t := &testing.T{} // in a real test: the test's *testing.T
	env := kubetest.Start(t, kubetest.WithControllerManager())
	env.Kubectl(nil, "create", "namespace", "demo")
	_ = env.Kubeconfig // for helm, client-go, …
}
