package phases_test

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"

	"kpaas.dev/appliance/agent/phases"
	"kpaas.dev/appliance/internal/bundle"
	"kpaas.dev/appliance/internal/containerd"
	"kpaas.dev/appliance/internal/kubetest"
	"kpaas.dev/appliance/internal/names"
	"kpaas.dev/appliance/internal/seed"
	"kpaas.dev/appliance/internal/testenv"
)

// The images of the node test, from the toolchain's image layout: the
// sandbox image and the one the releases run.
const (
	pauseRef   = "registry.k8s.io/pause:3.10.1"
	busyboxRef = "docker.io/library/busybox:1.35.0"
	missingRef = "docker.io/library/busybox:0.0-not-in-the-bundle"
)

// sleeper is a Deployment of one pod that sleeps in image.
func sleeper(name, image string) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: %[1]s}
spec:
  replicas: 1
  selector: {matchLabels: {app: %[1]s}}
  template:
    metadata: {labels: {app: %[1]s}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {name: %[1]s, image: %[2]s, command: [sleep, "3600"]}
`, name, image)
}

// nodeManifests are the releases' manifests of the node test.
var nodeManifests = map[string]string{
	"app": sleeper("app", busyboxRef),
	"job": `apiVersion: batch/v1
kind: Job
metadata: {name: hello}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - {name: hello, image: ` + busyboxRef + `, command: [sh, -c, "test -x /bin/busybox"]}
`,
	"broken": sleeper("broken", missingRef),
	"after-broken": `apiVersion: v1
kind: ConfigMap
metadata: {name: after-broken}
data: {never: "applied"}
`,
}

// nodeBundle writes a bundle holding the layout's images refs and the
// manifests, whose lock's platform is p.
func nodeBundle(t *testing.T, dir, layoutDir string, refs []string, manifests map[string]string, p *bundle.LockPlatform) *bundle.Store {
	t.Helper()
	idx, err := layout.ImageIndexFromPath(layoutDir)
	if err != nil {
		testenv.SkipOrFailf(t, "no toolchain image layout (run kpaas toolchain build): %v", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	b := newTestBundle(t, dir, "node-test", p)
	for _, ref := range refs {
		i := slices.IndexFunc(im.Manifests, func(m v1.Descriptor) bool { return m.Annotations["org.opencontainers.image.ref.name"] == ref })
		if i < 0 {
			testenv.SkipOrFailf(t, "%s is not in the toolchain's image layout %s (run kpaas toolchain build)", ref, layoutDir)
		}
		img, err := idx.Image(im.Manifests[i].Digest)
		if err != nil {
			t.Fatal(err)
		}
		b.addImage(ref, img)
	}
	for name, data := range manifests {
		b.addManifests(name, []byte(data))
	}
	return b.done()
}

// The platform on a real node: a kubelet and containerd on this host
// (internal/kubetest), whose only way to images is the seed over the
// bundle, as on a node. The releases' pods really run from the bundle's
// images: a Deployment rolls out, a Job that depends on it completes;
// a release whose image the bundle lacks fails its gate
// naming the pull failure and the image, and the release that depends on
// it is skipped.
func TestPlatformOnRealNode(t *testing.T) {
	manifests := func(name string) string { return "kpaas.local/manifests/" + name + ":1" }
	p := &bundle.LockPlatform{Releases: []bundle.LockRelease{
		{Name: "app", Namespace: "demo", Manifests: manifests("app"), Timeout: "4m"},
		{Name: "job", Namespace: "demo", Manifests: manifests("job"), DependsOn: []string{"app"}, Timeout: "4m"},
		{Name: "broken", Namespace: "broken", Manifests: manifests("broken"), Timeout: "75s"},
		{Name: "after-broken", Namespace: "broken", Manifests: manifests("after-broken"), DependsOn: []string{"broken"}, Timeout: "1m"},
	}}
	root := t.TempDir()
	layoutDir := filepath.Join(filepath.Dir(kubetest.BinDir()), "oci")
	store := nodeBundle(t, filepath.Join(root, names.BundleDir), layoutDir, []string{pauseRef, busyboxRef}, nodeManifests, p)

	// The node's seed over the bundle, recording what it serves, and
	// containerd's hosts.toml for each upstream pointing at it.
	var seedLog testenv.LockedBuffer
	srv, err := seed.New(store, seed.WithLogger(slog.New(slog.NewTextHandler(&seedLog, nil))))
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	hosts := filepath.Join(t.TempDir(), "certs.d")
	if err := containerd.WriteHostsDir(hosts, []string{"docker.io", "registry.k8s.io"}, "", ts.URL); err != nil {
		t.Fatal(err)
	}
	k := kubetest.Start(t, kubetest.WithControllerManager(), kubetest.WithScheduler(), kubetest.WithNode(hosts), kubetest.WithLogs())

	e, _, out := platformEnvAt(t, k, root)
	e.Wait = 1
	err = runPhase(e, platformPhase(t))
	t.Logf("platform phase:\n%s", out)
	if err == nil {
		t.Fatal("the platform phase passed with a release whose image the bundle lacks")
	}

	var st []map[string]any
	b, _ := e.Host.ReadFile(phases.PlatformStatusFile)
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("status.json: %v\n%s", err, b)
	}
	state := map[string]string{}
	for _, r := range st {
		state[r["name"].(string)] = r["state"].(string)
		if r["name"] == "broken" {
			msg, _ := r["error"].(string)
			if !strings.Contains(msg, "ImagePull") || !strings.Contains(msg, missingRef) || !strings.Contains(msg, "Deployment/broken") {
				t.Errorf("broken's error does not name the object, the pull failure and the image:\n%s", msg)
			}
		}
	}
	want := map[string]string{"app": "deployed", "job": "deployed", "broken": "failed", "after-broken": "skipped"}
	for name, w := range want {
		if state[name] != w {
			t.Errorf("release %s: %q, want %q", name, state[name], w)
		}
	}
	if !strings.Contains(out.String(), "release broken: waiting for its gate, 1m") {
		t.Errorf("no heartbeat while broken's gate waited:\n%s", out)
	}
	if i, j := strings.Index(out.String(), "release app "), strings.Index(out.String(), "release job "); i < 0 || j < i {
		t.Errorf("job before app:\n%s", out)
	}
	// The pods ran the bundle's busybox (its digest), on the node. (Their
	// logs are out of reach: the API server would dial the kubelet at the
	// host's address, and the test's kubelet listens on 127.0.0.1 only.)
	var digest string
	for _, a := range e.Lock.Artifacts {
		if a.Ref == busyboxRef {
			digest = a.Digest
		}
	}
	wantID := "docker.io/library/busybox@" + digest
	if got := k.Kubectl(nil, "-n", "demo", "get", "pods", "-l", "app=app", "-o", "jsonpath={.items[0].spec.nodeName} {.items[0].status.phase} {.items[0].status.containerStatuses[0].imageID}"); got != kubetest.NodeName+" Running "+wantID {
		t.Errorf("app's pod: %q, want on %s, Running, image %s", got, kubetest.NodeName, wantID)
	}
	if got := k.Kubectl(nil, "-n", "demo", "get", "pods", "-l", "job-name=hello", "-o", "jsonpath={.items[0].status.phase} {.items[0].status.containerStatuses[0].state.terminated.exitCode} {.items[0].status.containerStatuses[0].imageID}"); got != "Succeeded 0 "+wantID {
		t.Errorf("the job's pod: %q, want Succeeded, exit code 0, image %s", got, wantID)
	}
	if _, err := k.KubectlErr(nil, "-n", "broken", "get", "configmap", "after-broken"); err == nil {
		t.Errorf("the release after the failed one was applied")
	}
	served := seedLog.String()
	for _, repo := range []string{"registry.k8s.io/pause", "docker.io/library/busybox"} {
		if !strings.Contains(served, "repository="+repo+" ") {
			t.Errorf("the seed did not serve %s:\n%s", repo, served)
		}
	}
}
