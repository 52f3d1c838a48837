package kubetest_test

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"kpaas.dev/appliance/internal/kubetest"
)

const deployment = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: pause
        image: registry.k8s.io/pause:3.10.1
`

// TestKubectl creates and reads objects through the built kubectl against the
// built kube-apiserver, and checks that the controller manager turns a
// Deployment into a ReplicaSet and Pods (no node: they stay Pending).
func TestKubectl(t *testing.T) {
	env := kubetest.Start(t, kubetest.WithControllerManager(), kubetest.WithScheduler(), kubetest.WithLogs())

	version := env.Kubectl(nil, "version", "-o", "json")
	var v struct {
		ServerVersion struct{ GitVersion string } `json:"serverVersion"`
	}
	if err := json.Unmarshal([]byte(version), &v); err != nil {
		t.Fatalf("kubectl version: %v\n%s", err, version)
	}
	if v.ServerVersion.GitVersion != kubetest.KubernetesVersion {
		t.Errorf("server version = %q, want %q", v.ServerVersion.GitVersion, kubetest.KubernetesVersion)
	}

	t.Run("configmap", func(t *testing.T) {
		env.Kubectl(nil, "create", "configmap", "smoke", "--from-literal=hello=world")
		got := env.Kubectl(nil, "get", "configmap", "smoke", "-o", "jsonpath={.data.hello}")
		if got != "world" {
			t.Errorf("configmap smoke hello = %q, want world", got)
		}
	})

	t.Run("deployment", func(t *testing.T) {
		env.Kubectl([]byte(deployment), "apply", "-f", "-")
		env.Eventually(60*time.Second, func() error {
			out, err := env.KubectlErr(nil, "get", "pods", "-l", "app=web", "-o", "name")
			if err != nil {
				return err
			}
			if n := len(strings.Fields(out)); n != 2 {
				return fmt.Errorf("%d pods of deployment web, want 2", n)
			}
			return nil
		})
		rs := env.Kubectl(nil, "get", "replicasets", "-l", "app=web", "-o", "jsonpath={.items[0].spec.replicas}")
		if rs != "2" {
			t.Errorf("replicaset replicas = %q, want 2", rs)
		}
	})

	t.Run("rest", func(t *testing.T) {
		resp, err := env.HTTPClient().Get(env.Host + "/api/v1/namespaces/default/configmaps/smoke")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || !strings.Contains(string(body), `"hello":"world"`) {
			t.Errorf("GET configmap: %s\n%s", resp.Status, body)
		}
	})
}

// TestSkipWithoutToolchain checks that a missing toolchain skips rather
// than fails on a developer's machine (in CI it fails: internal/testenv).
func TestSkipWithoutToolchain(t *testing.T) {
	t.Setenv("CI", "")
	dir := t.TempDir()
	var skipped bool
	t.Run("inner", func(t *testing.T) {
		defer func() { skipped = t.Skipped() }()
		kubetest.Start(t, kubetest.WithBinDir(dir))
		t.Error("Start returned without binaries")
	})
	if !skipped {
		t.Error("Start did not skip")
	}
}
