package phases_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"

	"kpaas.dev/appliance/agent/phases"
	cluster "kpaas.dev/appliance/api/cluster/v1alpha1"
	"kpaas.dev/appliance/internal/bundle"
	"kpaas.dev/appliance/internal/harbor"
	"kpaas.dev/appliance/internal/harbor/harborlocal"
	"kpaas.dev/appliance/internal/kubetest"
)

func harborPhase(t *testing.T) phases.Phase { return phaseNamed(t, "harbor") }

func runtimePhase(t *testing.T) phases.Phase { return phaseNamed(t, "runtime") }

func phaseNamed(t *testing.T, name string) phases.Phase {
	t.Helper()
	for _, p := range phases.List() {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("no %s phase in List", name)
	return phases.Phase{}
}

// The harbor phase on the first control plane pushes the bundle's images
// and charts into a real Harbor (built from its sources) with the admin
// password of the platform secret, records it in the cluster, and a
// second run finds the record and pushes nothing.
func TestHarborPhasePushesTheBundle(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real Harbor and API server")
	}
	k := kubetest.Start(t)
	h := harborlocal.Start(t)
	p := goodPlatform()
	p.Secrets = append(p.Secrets, bundle.LockSecret{Name: "harbor-admin-password", Namespace: "harbor", Key: "password"})
	p.Releases = append(p.Releases, bundle.LockRelease{
		Name: "harbor", Namespace: "harbor", Chart: "kpaas.local/charts/app:0.1.0", Timeout: "10m",
		Harbor: true, URL: h.URL,
		Values: map[string]any{"harborAdminPassword": "${secret:harbor-admin-password}"},
	})
	e, kc, out := platformEnv(t, k, p)
	write(t, e.Host.Root, filepath.Join(e.SecretsDir, phases.PlatformSecrets, "harbor-admin-password"), []byte(h.Password+"\n"), 0o600)
	img := addImage(t, e.Bundle, "docker.io/library/busybox:1.36")
	addImage(t, e.Bundle, "registry.k8s.io/pause:3.10.1") // the runtime phase needs its tag
	lock, err := e.Bundle.ReadLock()
	if err != nil {
		t.Fatal(err)
	}
	e.Lock = lock

	plan := strings.Join(harborPhase(t).Plan(e), "\n")
	if !strings.Contains(plan, "push the bundle's 3 images and charts into Harbor (release harbor) at "+h.URL) {
		t.Errorf("plan: %s", plan)
	}

	// A worker whose agent runs before Harbor holds the bundle keeps
	// pulling from its seed and leaves the switch to the timer.
	cp1 := e.Node
	e.Node = &e.Cluster.Nodes[2]
	if plan := strings.Join(harborPhase(t).Plan(e), "\n"); strings.Contains(plan, "push") || !strings.Contains(plan, "once Harbor holds the bundle's 2 images") {
		t.Errorf("worker's plan: %s", plan)
	}
	if err := runPhase(e, harborPhase(t)); err != nil {
		t.Fatalf("worker: %v\n%s", err, out)
	}
	kc.mu.Lock()
	timerOn := kc.enabled[phases.HarborMirrorTimerName]
	kc.mu.Unlock()
	// (Harbor has not even the project yet, and says so.)
	if !timerOn || !strings.Contains(out.String(), "containerd on w1 keeps pulling from the node's seed for now: Harbor at "+h.URL+": docker.io/library/busybox:1.36 at docker.io/library/busybox: project \"docker.io\" does not exist") {
		t.Errorf("worker before the push: timer enabled %v\n%s", timerOn, out)
	}
	hostsTOML := filepath.Join(e.Host.Root, "/etc/containerd/certs.d/docker.io/hosts.toml")
	if b, err := os.ReadFile(hostsTOML); err == nil && strings.Contains(string(b), h.URL) {
		t.Errorf("worker asks Harbor before it holds the bundle:\n%s", b)
	}
	if res, err := phases.SwitchToHarbor(context.Background(), e); err != nil || res.Switched || !strings.Contains(res.Reason, "does not exist") {
		t.Errorf("switch before the push: %+v, %v", res, err)
	}
	e.Node = cp1

	out.Reset()
	if err := runPhase(e, harborPhase(t)); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	// The first control plane switched after its push, which stopped the
	// timer (this test's machine is the worker's too).
	b, err := os.ReadFile(hostsTOML)
	if err != nil || !strings.Contains(string(b), h.URL+"/v2/docker.io") || strings.Index(string(b), h.URL) > strings.Index(string(b), "127.0.0.1:") {
		t.Errorf("after the push, hosts.toml (%v):\n%s", err, b)
	}
	kc.mu.Lock()
	timerOn = kc.enabled[phases.HarborMirrorTimerName]
	kc.mu.Unlock()
	if timerOn || !strings.Contains(out.String(), "containerd on cp1 asks Harbor at "+h.URL+" first now, then the node's seed (Harbor holds all 2 images of the bundle)") {
		t.Errorf("after the push: timer enabled %v\n%s", timerOn, out)
	}
	var api *harbor.Client
	if strings.Contains(out.String(), h.Password) {
		t.Errorf("the admin password in the output:\n%s", out)
	}
	api, err = harbor.New(h.URL, harbor.WithBasicAuth(h.Admin, h.Password))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []struct{ project, repo, ref, digest string }{
		{"docker.io", "library/busybox", "1.36", img.String()},
		{"kpaas.local", "charts/app", "0.1.0", ""},
	} {
		a, err := api.Artifact(context.Background(), want.project, want.repo, want.ref)
		if err != nil {
			t.Fatalf("%s/%s:%s in Harbor: %v", want.project, want.repo, want.ref, err)
		}
		if want.digest != "" && a.Digest != want.digest {
			t.Errorf("%s/%s:%s is %s in Harbor, %s in the bundle", want.project, want.repo, want.ref, a.Digest, want.digest)
		}
		if pr, err := api.GetProject(context.Background(), want.project); err != nil || pr.Metadata.Public != "true" {
			t.Errorf("project %s: public = %v (%v): nodes pull without credentials", want.project, pr, err)
		}
	}
	rec := phases.HarborStatus(context.Background(), e)
	if rec["state"] != phases.HarborPushed || rec["images"] != "2" || rec["charts"] != "1" || rec["url"] != h.URL || !strings.HasPrefix(rec["bundle"], "sha256:") ||
		rec["health"] != "unhealthy (portal: unhealthy)" || rec["ended"] != "3/3" { // Harbor's own word: harborlocal runs no portal
		t.Errorf("record %v", rec)
	}

	out.Reset()
	if err := runPhase(e, harborPhase(t)); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !strings.Contains(out.String(), "phase harbor (1/1): already done") {
		t.Errorf("second run:\n%s", out)
	}

	// Every node's containerd asks Harbor first, then its seed.
	if plan := strings.Join(runtimePhase(t).Plan(e), "\n"); !strings.Contains(plan, "image pulls go to the cluster's Harbor at "+h.URL+" first") {
		t.Errorf("runtime plan:\n%s", plan)
	}

	// A site that disables Harbor has nothing to push, and pulls go to
	// the seed only.
	e.Cluster.Platform = &cluster.Platform{Disable: []string{"harbor"}}
	if plan := strings.Join(runtimePhase(t).Plan(e), "\n"); !strings.Contains(plan, "image pulls go to the node's seed at http://127.0.0.1:") {
		t.Errorf("runtime plan with harbor disabled:\n%s", plan)
	}
	if plan := harborPhase(t).Plan(e); !strings.Contains(strings.Join(plan, ""), "nothing") {
		t.Errorf("plan with harbor disabled: %v", plan)
	}
}

// addImage writes a small random image into the bundle as ref and lists
// it in the lock.
func addImage(t *testing.T, s *bundle.Store, ref string) v1.Hash {
	t.Helper()
	img, err := random.Image(2048, 2)
	if err != nil {
		t.Fatal(err)
	}
	d, err := s.NewWriter().WriteImage(context.Background(), img)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := s.Entries()
	if err != nil {
		t.Fatal(err)
	}
	var ds []v1.Descriptor
	for _, e := range entries {
		ds = append(ds, e.Descriptor)
	}
	ds = append(ds, bundle.Annotate(d, bundle.KindImage, ref))
	if err := s.SetEntries(ds); err != nil {
		t.Fatal(err)
	}
	lock, err := s.ReadLock()
	if err != nil {
		t.Fatal(err)
	}
	lock.Artifacts = append(lock.Artifacts, bundle.LockArtifact{Kind: bundle.KindImage, Ref: ref, Digest: d.Digest.String(), MediaType: string(d.MediaType)})
	b, _ := lock.Marshal()
	if _, err := s.WriteFile(bundle.LockFile, b); err != nil {
		t.Fatal(err)
	}
	return d.Digest
}
