package phases_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/crypto/bcrypt"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"

	"kpaas.dev/appliance/agent/host"
	"kpaas.dev/appliance/agent/phases"
	bundlev1 "kpaas.dev/appliance/api/bundle/v1alpha1"
	cluster "kpaas.dev/appliance/api/cluster/v1alpha1"
	"kpaas.dev/appliance/internal/bundle"
	"kpaas.dev/appliance/internal/clustersecrets"
	"kpaas.dev/appliance/internal/exec"
	"kpaas.dev/appliance/internal/kubetest"
	"kpaas.dev/appliance/internal/names"
	"kpaas.dev/appliance/internal/progress"
	"kpaas.dev/appliance/internal/steps"
)

// realKubectl runs the phase's kubectl commands with the toolchain's
// kubectl against a real API server (internal/kubetest): the exec seam
// with the real program behind it, the admin kubeconfig swapped for the
// test cluster's. It refuses every other command.
type realKubectl struct {
	env *kubetest.Env
	// kubeconfigs maps the node's kubeconfig paths to the test's (default:
	// the admin's); a path not in it stays, and kubectl finds no such file.
	kubeconfigs map[string]string
	mu          sync.Mutex
	lines       []string
	// enabled are the units systemctl enabled (the harbor phase's timer):
	// systemctl answers daemon-reload, enable, disable and is-enabled as
	// systemd does for them; other commands are not on this machine.
	enabled map[string]bool
}

func (r *realKubectl) Run(ctx context.Context, c exec.Cmd) ([]byte, error) {
	if c.Name == "systemctl" && len(c.Args) > 0 {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.lines = append(r.lines, lineOf(c))
		unit := c.Args[len(c.Args)-1]
		switch c.Args[0] {
		case "daemon-reload":
			return nil, nil
		case "enable", "disable":
			if r.enabled == nil {
				r.enabled = map[string]bool{}
			}
			r.enabled[unit] = c.Args[0] == "enable"
			return nil, nil
		case "is-enabled":
			if r.enabled[unit] {
				return nil, nil
			}
			return nil, &exec.RunError{Cmd: c, ExitCode: 1, Err: errors.New("disabled")}
		}
	}
	if c.Name != "kubectl" {
		return nil, &exec.RunError{Cmd: c, ExitCode: 127, Err: errors.New("not on this machine")}
	}
	r.mu.Lock()
	r.lines = append(r.lines, lineOf(c))
	r.mu.Unlock()
	args := slices.Clone(c.Args)
	kcs := r.kubeconfigs
	if kcs == nil {
		kcs = map[string]string{"/etc/kubernetes/admin.conf": r.env.Kubeconfig}
	}
	for i := range args {
		if p, ok := kcs[args[i]]; ok {
			args[i] = p
		}
	}
	c.Name, c.Args = filepath.Join(r.env.BinDir, "kubectl"), args
	return exec.Host{}.Run(ctx, c)
}

func (r *realKubectl) count(prefix string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return count(r.lines, prefix)
}

// testBundle writes a bundle for the platform tests: artifacts added one
// by one, then done writes the entries and the lock.
type testBundle struct {
	t    *testing.T
	s    *bundle.Store
	w    *bundle.Writer
	lock *bundle.Lock
	ds   []v1.Descriptor
}

func newTestBundle(t *testing.T, dir, name string, p *bundle.LockPlatform) *testBundle {
	t.Helper()
	s, err := bundle.Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	return &testBundle{t: t, s: s, w: s.NewWriter(),
		lock: &bundle.Lock{APIVersion: "kpaas.dev/v1alpha1", Kind: bundle.LockKind, Name: name, Version: "1", KubernetesVersion: "v1.35.4", Platform: p}}
}

// add records the artifact ref whose manifest is raw (its blobs written).
func (b *testBundle) add(kind bundle.Kind, ref string, raw []byte, la bundle.LockArtifact) {
	b.t.Helper()
	h, size, err := b.w.WriteBytes(raw)
	if err != nil {
		b.t.Fatal(err)
	}
	d := v1.Descriptor{MediaType: "application/vnd.oci.image.manifest.v1+json", Digest: h, Size: size}
	b.ds = append(b.ds, bundle.Annotate(d, kind, ref))
	la.Kind, la.Ref, la.Digest, la.MediaType = kind, ref, h.String(), string(d.MediaType)
	b.lock.Artifacts = append(b.lock.Artifacts, la)
}

// addManifests adds data as the file NAME.yaml, artifact
// kpaas.local/manifests/NAME:1.
func (b *testBundle) addManifests(name string, data []byte) {
	b.t.Helper()
	h, size, err := b.w.WriteBytes(data)
	if err != nil {
		b.t.Fatal(err)
	}
	b.w.WriteBytes(bundle.EmptyJSON)
	raw, err := bundle.FileManifest(v1.Descriptor{Digest: h, Size: size}, name+".yaml", "1", "0644", "")
	if err != nil {
		b.t.Fatal(err)
	}
	b.add(bundle.KindFile, "kpaas.local/manifests/"+name+":1", raw, bundle.LockArtifact{})
}

// addImage adds img as the image ref.
func (b *testBundle) addImage(ref string, img v1.Image) {
	b.t.Helper()
	d, err := b.w.WriteImage(context.Background(), img)
	if err != nil {
		b.t.Fatal(err)
	}
	b.ds = append(b.ds, bundle.Annotate(d, bundle.KindImage, ref))
	b.lock.Artifacts = append(b.lock.Artifacts, bundle.LockArtifact{Kind: bundle.KindImage, Ref: ref, Digest: d.Digest.String(), MediaType: string(d.MediaType)})
}

// done writes the entries and the lock.
func (b *testBundle) done() *bundle.Store {
	b.t.Helper()
	if err := b.s.SetEntries(b.ds); err != nil {
		b.t.Fatal(err)
	}
	raw, _ := b.lock.Marshal()
	if _, err := b.s.WriteFile(bundle.LockFile, raw); err != nil {
		b.t.Fatal(err)
	}
	return b.s
}

// platformBundle writes a bundle holding the test chart, the test
// manifests and a lock whose platform section is p.
func platformBundle(t *testing.T, dir string, p *bundle.LockPlatform) {
	t.Helper()
	b := newTestBundle(t, dir, "test", p)
	// The chart, packaged as helm does.
	c, err := loader.LoadDir("testdata/platform/charts/app")
	if err != nil {
		t.Fatal(err)
	}
	tgz, err := chartutil.Save(c, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	archive, _ := os.ReadFile(tgz)
	cfg, _ := json.Marshal(c.Metadata)
	ch, chs, _ := b.w.WriteBytes(cfg)
	lh, ls, _ := b.w.WriteBytes(archive)
	raw, err := bundle.ChartManifest(v1.Descriptor{Digest: ch, Size: chs}, v1.Descriptor{Digest: lh, Size: ls}, "app", "0.1.0")
	if err != nil {
		t.Fatal(err)
	}
	b.add(bundle.KindChart, "kpaas.local/charts/app:0.1.0", raw, bundle.LockArtifact{Chart: &bundle.LockChart{
		Name: "app", Version: "0.1.0", Release: "app", Namespace: "app", Values: map[string]any{"replicas": 0},
	}})
	for _, m := range []string{"crds", "broken", "owned-v1", "owned-v2", "typos"} {
		data, err := os.ReadFile("testdata/platform/manifests/" + m + ".yaml")
		if err != nil {
			t.Fatal(err)
		}
		b.addManifests(m, data)
	}
	b.done()
}

// platformEnv is the first control plane of the test site, whose kubectl
// talks to k.
func platformEnv(t *testing.T, k *kubetest.Env, p *bundle.LockPlatform) (*phases.Env, *realKubectl, *bytes.Buffer) {
	t.Helper()
	root := t.TempDir()
	platformBundle(t, filepath.Join(root, names.BundleDir), p)
	return platformEnvAt(t, k, root)
}

// platformEnvAt is platformEnv for a machine root whose bundle is written.
func platformEnvAt(t *testing.T, k *kubetest.Env, root string) (*phases.Env, *realKubectl, *bytes.Buffer) {
	t.Helper()
	store, err := bundle.Open(filepath.Join(root, names.BundleDir))
	if err != nil {
		t.Fatal(err)
	}
	lock, err := store.ReadLock()
	if err != nil {
		t.Fatal(err)
	}
	c, err := cluster.Parse("site.yaml", []byte(siteYAML))
	if err != nil {
		t.Fatal(err)
	}
	secrets := filepath.Join(names.ConfigDir, cluster.SecretsDir)
	write(t, root, filepath.Join(secrets, phases.PlatformSecrets, "app-password"), []byte("correct-horse-battery\n"), 0o600)
	// The others as `kpaas cluster init --bundle` makes them.
	if lock.Platform != nil {
		var specs []bundlev1.PlatformSecret
		for _, s := range lock.Platform.Secrets {
			specs = append(specs, bundlev1.PlatformSecret{Name: s.Name, Type: s.Type, Key: s.Key, Htpasswd: s.Htpasswd})
		}
		if _, err := clustersecrets.GeneratePlatform(filepath.Join(root, names.ConfigDir), specs); err != nil {
			t.Fatal(err)
		}
	}
	r := &realKubectl{env: k}
	out := &bytes.Buffer{}
	return &phases.Env{
		Host: &host.Host{Root: root, Exec: r}, Bundle: store, Lock: lock, Cluster: c, Node: &c.Nodes[0],
		SecretsDir: secrets, Progress: progress.New(out, progress.Terminal(false)),
		Dial: phases.TCPDial, Wait: 0.05,
	}, r, out
}

func platformPhase(t *testing.T) phases.Phase { return phaseNamed(t, "platform") }

func runPhase(e *phases.Env, p phases.Phase) error {
	p.Retry.Attempts = 1
	r := &steps.Runner{Progress: e.Progress}
	return r.Run(context.Background(), phases.Steps(e, []phases.Phase{p}))
}

func goodPlatform() *bundle.LockPlatform {
	return &bundle.LockPlatform{
		Facts: map[string]string{"greeting": "hello"},
		Secrets: []bundle.LockSecret{
			{Name: "app-password", Namespace: "kpaas-system", Key: "password", Htpasswd: "app"},
			{Name: "app-token", Namespace: "app", Type: "tls"},
		},
		Releases: []bundle.LockRelease{
			{Name: "app", Namespace: "app", Chart: "kpaas.local/charts/app:0.1.0", DependsOn: []string{"crds"}, Timeout: "10m",
				Values: map[string]any{"password": "${secret:app-password}", "endpoint": "${fact:controlPlaneEndpoint}"},
				Gate: bundle.LockGate{Conditions: []bundle.LockGateCondition{
					{Object: "widget/app-widget", JSONPath: "{.spec.size}", Equals: "3"},
				}}},
			{Name: "crds", Namespace: "crds", Manifests: "kpaas.local/manifests/crds:1", Timeout: "10m"},
		},
	}
}

// The platform against a real API server: releases in dependency order,
// CRDs established before their resources (in the same stream and in a
// later release), facts and secrets in values, records in kpaas-system;
// a second run applies nothing.
func TestPlatformOnRealAPIServer(t *testing.T) {
	k := kubetest.Start(t, kubetest.WithControllerManager())
	e, r, out := platformEnv(t, k, goodPlatform())
	if err := runPhase(e, platformPhase(t)); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if got := k.Kubectl(nil, "-n", "app", "get", "configmap", "app-settings", "-o", "jsonpath={.data.endpoint}/{.data.passwordLength}"); got != "10.0.0.11:6443/21" {
		t.Errorf("app-settings = %q", got)
	}
	if got := k.Kubectl(nil, "-n", "kpaas-system", "get", "secret", "app-password", "-o", "jsonpath={.data.password}"); got != base64.StdEncoding.EncodeToString([]byte("correct-horse-battery")) {
		t.Errorf("the platform secret was not created: %q", got)
	}
	// Its htpasswd line, made once from it; a key pair of type tls.
	line, _ := base64.StdEncoding.DecodeString(k.Kubectl(nil, "-n", "kpaas-system", "get", "secret", "app-password", "-o", "jsonpath={.data.htpasswd}"))
	if user, hash, _ := strings.Cut(string(line), ":"); user != "app" || bcrypt.CompareHashAndPassword([]byte(hash), []byte("correct-horse-battery")) != nil {
		t.Errorf("app-password's htpasswd line %q", line)
	}
	if got := k.Kubectl(nil, "-n", "app", "get", "secret", "app-token", "-o", "jsonpath={.type}"); got != "kubernetes.io/tls" {
		t.Errorf("app-token's type %q", got)
	}
	crt, _ := base64.StdEncoding.DecodeString(k.Kubectl(nil, "-n", "app", "get", "secret", "app-token", "-o", "jsonpath={.data.tls\\.crt}"))
	key, _ := base64.StdEncoding.DecodeString(k.Kubectl(nil, "-n", "app", "get", "secret", "app-token", "-o", "jsonpath={.data.tls\\.key}"))
	if _, err := tls.X509KeyPair(crt, key); err != nil {
		t.Errorf("app-token's certificate and key: %v", err)
	}
	k.Kubectl(nil, "-n", "crds", "get", "widget", "first")
	var st []phases.ReleaseStatus
	b, _ := e.Host.ReadFile(phases.PlatformStatusFile)
	if err := json.Unmarshal(b, &st); err != nil || len(st) != 2 || st[0].Name != "app" || st[0].State != "deployed" || st[1].State != "deployed" {
		t.Errorf("%s: %s (%v)", phases.PlatformStatusFile, b, err)
	}
	for _, rel := range []string{"crds", "app"} {
		if got := k.Kubectl(nil, "-n", "kpaas-system", "get", "configmap", "kpaas-release-"+rel, "-o", "jsonpath={.data.state}"); got != "deployed" {
			t.Errorf("release %s: %s", rel, got)
		}
	}
	lines := strings.Join(r.lines, "\n")
	if strings.Contains(lines, "correct-horse-battery") || strings.Contains(out.String(), "correct-horse-battery") {
		t.Errorf("a secret in the commands or output")
	}
	// crds before app.
	if i, j := strings.Index(out.String(), "release crds"), strings.Index(out.String(), "release app"); i < 0 || j < i {
		t.Errorf("order:\n%s", out)
	}

	// Again: the check holds, nothing is applied.
	r.lines = nil
	out.Reset()
	if err := runPhase(e, platformPhase(t)); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !strings.Contains(out.String(), "already done") || r.count("kubectl --kubeconfig /etc/kubernetes/admin.conf apply") != 0 {
		t.Errorf("second run:\n%s\n%s", out, strings.Join(r.lines, "\n"))
	}
}

// The other nodes follow the platform: the first control plane lets every
// node's kubelet credentials get the releases' records, and nothing else
// of kpaas-system; a worker's agent reads them and says how far it is.
func TestPlatformProgressOnOtherNodes(t *testing.T) {
	k := kubetest.Start(t, kubetest.WithControllerManager())
	e, _, out := platformEnv(t, k, goodPlatform())
	nodeConf := k.UserKubeconfig("system:node:w1", "system:nodes")
	w := &phases.Env{
		Host:   &host.Host{Root: e.Host.Root, Exec: &realKubectl{env: k, kubeconfigs: map[string]string{phases.KubeletConf: nodeConf}}},
		Bundle: e.Bundle, Lock: e.Lock, Cluster: e.Cluster, Node: &e.Cluster.Nodes[1], Progress: e.Progress,
	}
	ctx := context.Background()

	if got := phases.PlatformProgress(ctx, w); got != "platform: installed by the first control plane cp1; its progress is not readable yet (it has not started yet)" {
		t.Errorf("before the platform phase: %s", got)
	}
	if err := runPhase(e, platformPhase(t)); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	want := "platform: installed by the first control plane cp1; 2 of 2 releases deployed (app deployed, crds deployed)"
	if got := phases.PlatformProgress(ctx, w); !strings.HasPrefix(got, want) {
		t.Errorf("after the platform phase:\n got %s\nwant %s…", got, want)
	}
	// Only the records, only by name.
	for _, args := range [][]string{
		{"-n", "kpaas-system", "get", "secret", "app-password"},
		{"-n", "kpaas-system", "get", "configmaps"},
		{"-n", "app", "get", "configmap", "app-settings"},
	} {
		c := exec.Command("kubectl", append([]string{"--kubeconfig", phases.KubeletConf}, args...)...)
		if b, err := w.Host.RunCmd(ctx, c); err == nil || !strings.Contains(err.Error(), "forbidden") {
			t.Errorf("kubectl %s as a node: %v\n%s", strings.Join(args, " "), err, b)
		}
	}
}

// A release whose pods cannot run fails its gate with the object and the
// scheduler's reason; the release that depends on it is skipped; the
// others are deployed.
func TestPlatformGateFailureOnRealAPIServer(t *testing.T) {
	k := kubetest.Start(t, kubetest.WithControllerManager(), kubetest.WithScheduler())
	p := goodPlatform()
	p.Releases = append(p.Releases,
		bundle.LockRelease{Name: "broken", Namespace: "broken", Manifests: "kpaas.local/manifests/broken:1", Timeout: "600s",
			Substitute: map[string]string{"{SERVER}": "${fact:greeting}"}},
		bundle.LockRelease{Name: "after", Namespace: "after", Manifests: "kpaas.local/manifests/crds:1", DependsOn: []string{"broken"}, Timeout: "10m"},
	)
	e, r, out := platformEnv(t, k, p)
	err := runPhase(e, platformPhase(t))
	defer func() {
		if t.Failed() {
			for _, l := range r.lines {
				if strings.Contains(l, "pods") {
					t.Log(l)
				}
			}
		}
	}()
	if err == nil {
		t.Fatalf("no error:\n%s", out)
	}
	for _, want := range []string{
		"release broken: gate not passed in 600s",
		"Deployment/broken in broken: 0 of 1 replicas available; pod broken-",
		"Pending: Unschedulable: no nodes available to schedule pods",
		"release after: skipped: release \"broken\" failed",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not say %q:\n%v", want, err)
		}
	}
	if t.Failed() {
		t.Logf("pods: %s\nreplicasets: %s", k.Kubectl(nil, "-n", "broken", "get", "pods", "-o", "yaml"), k.Kubectl(nil, "-n", "broken", "get", "rs", "-o", "yaml"))
	}
	if got := k.Kubectl(nil, "-n", "broken", "get", "deployment", "broken", "-o", "jsonpath={.spec.template.spec.containers[0].env[0].value}"); got != "hello" {
		t.Errorf("substitution: %q", got)
	}
	for rel, want := range map[string]string{"crds": "deployed", "app": "deployed", "broken": "failed", "after": "skipped"} {
		if got := k.Kubectl(nil, "-n", "kpaas-system", "get", "configmap", "kpaas-release-"+rel, "-o", "jsonpath={.data.state}"); got != want {
			t.Errorf("release %s: %q, want %q", rel, got, want)
		}
	}
}

// The agent applies without kubectl's client-side validation (applyArgs),
// yet a misspelt field still fails the release, named in the error, for
// a built-in kind and a custom resource alike: the API server checks a
// server-side apply against the schema. Nothing of the object is
// applied.
func TestPlatformRefusesUnknownFields(t *testing.T) {
	k := kubetest.Start(t, kubetest.WithControllerManager())
	p := goodPlatform()
	p.Releases = append(p.Releases, bundle.LockRelease{Name: "typos", Namespace: "typos", Manifests: "kpaas.local/manifests/typos:1",
		DependsOn: []string{"crds"}, Timeout: "10m"})
	e, r, out := platformEnv(t, k, p)
	err := runPhase(e, platformPhase(t))
	if err == nil {
		t.Fatalf("no error:\n%s", out)
	}
	for _, want := range []string{".spec.replica: field not declared in schema", ".spec.colour: field not declared in schema"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not say %q:\n%v", want, err)
		}
	}
	if r.count("kubectl --kubeconfig /etc/kubernetes/admin.conf apply --server-side --force-conflicts --field-manager kpaas-agent --validate=false") == 0 {
		t.Errorf("no apply without client-side validation:\n%s", strings.Join(r.lines, "\n"))
	}
	for _, obj := range []string{"deployment/typo", "widget/typo"} {
		if _, err := k.KubectlErr(nil, "-n", "typos", "get", obj); err == nil {
			t.Errorf("%s was applied", obj)
		}
	}
	if got := k.Kubectl(nil, "-n", "kpaas-system", "get", "configmap", "kpaas-release-typos", "-o", "jsonpath={.data.state}"); got != "failed" {
		t.Errorf("release typos: %q", got)
	}
}

// A power cut in the middle (the agent killed while a release is being
// applied) leaves a pending record; the next boot repairs it and skips
// what is deployed.
func TestPlatformResumesOnRealAPIServer(t *testing.T) {
	k := kubetest.Start(t, kubetest.WithControllerManager())
	e, r, out := platformEnv(t, k, goodPlatform())
	// The first boot: crds deployed, app recorded pending, then the power goes.
	ctx, cancel := context.WithCancel(context.Background())
	cut := false
	e.Host.Exec = cutAt{r: r, cancel: cancel, cut: &cut, at: func(c exec.Cmd) bool {
		// app's objects are being applied.
		return bytes.Contains(c.Stdin, []byte(`"name":"app-settings"`)) && slices.Contains(c.Args, "apply")
	}}
	ph := platformPhase(t)
	ph.Retry.Attempts = 1
	(&steps.Runner{Progress: e.Progress}).Run(ctx, phases.Steps(e, []phases.Phase{ph}))
	e.Host.Exec = r
	states := k.Kubectl(nil, "-n", "kpaas-system", "get", "configmaps", "-l", phases.ReleaseLabel, "-o", `jsonpath={range .items[*]}{.data.release}={.data.state} {end}`)
	if !strings.Contains(states, "crds=deployed") || strings.Contains(states, "app=deployed") {
		t.Fatalf("after the cut: %s\n%s", states, out)
	}
	r.lines = nil
	if err := runPhase(e, platformPhase(t)); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, l := range r.lines {
		if strings.Contains(l, "apply") && strings.Contains(l, "customresourcedefinition") {
			t.Errorf("the deployed release was applied again: %s", l)
		}
	}
	if got := k.Kubectl(nil, "-n", "kpaas-system", "get", "configmap", "kpaas-release-app", "-o", "jsonpath={.data.state}"); got != "deployed" {
		t.Errorf("app after resuming: %s\n%s", got, out)
	}
}

// cutAt passes commands to r until one for which at says true: then the
// power goes (ctx is cancelled) and that command and every later one fail.
type cutAt struct {
	r      *realKubectl
	at     func(exec.Cmd) bool
	cancel func()
	cut    *bool
}

func (c cutAt) Run(ctx context.Context, cmd exec.Cmd) ([]byte, error) {
	if *c.cut || c.at(cmd) {
		*c.cut = true
		c.cancel()
		return nil, &exec.RunError{Cmd: cmd, ExitCode: -1, Err: context.Canceled}
	}
	return c.r.Run(ctx, cmd)
}

// A site turns releases off in its cluster config: the others are
// installed, the status says "disabled", and disabling a release another
// one needs, or one the bundle lacks, is refused with both names.
func TestPlatformDisabledReleases(t *testing.T) {
	k := kubetest.Start(t, kubetest.WithControllerManager())
	e, _, out := platformEnv(t, k, goodPlatform())

	for _, bad := range []struct {
		disable []string
		want    string
	}{
		{[]string{"crds"}, "release app depends on crds, which platform.disable turns off"},
		{[]string{"app", "nope"}, `platform.disable names "nope"`},
	} {
		e.Cluster.Platform = &cluster.Platform{Disable: bad.disable}
		err := runPhase(e, platformPhase(t))
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("disable %v: err = %v, want %q", bad.disable, err, bad.want)
		}
	}

	e.Cluster.Platform = &cluster.Platform{Disable: []string{"app"}}
	out.Reset()
	if err := runPhase(e, platformPhase(t)); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if got := k.Kubectl(nil, "-n", "kpaas-system", "get", "configmap", "kpaas-release-crds", "-o", "jsonpath={.data.state}"); got != "deployed" {
		t.Errorf("crds: %q", got)
	}
	if _, err := k.KubectlErr(nil, "-n", "kpaas-system", "get", "configmap", "kpaas-release-app"); err == nil {
		t.Errorf("the disabled release app was installed")
	}
	st, err := phases.ReleaseStatuses(context.Background(), e)
	if err != nil || len(st) != 2 || st[0].Name != "app" || st[0].State != phases.ReleaseDisabled || st[1].State != phases.ReleaseDeployed {
		t.Errorf("statuses %+v (%v)", st, err)
	}
	plan := strings.Join(platformPhase(t).Plan(e), "\n")
	if !strings.Contains(plan, "not installed at this site (platform.disable of the cluster config): app") {
		t.Errorf("plan:\n%s", plan)
	}
}

// A newer bundle's release that no longer has some objects: they are
// deleted once the new ones are applied (also when the power went in
// between), except those marked helm.sh/resource-policy: keep; the
// record lists what the release owns now.
func TestPlatformDeletesDroppedObjects(t *testing.T) {
	k := kubetest.Start(t, kubetest.WithControllerManager())
	owned := func(version string) *bundle.LockPlatform {
		return &bundle.LockPlatform{Releases: []bundle.LockRelease{
			{Name: "owned", Namespace: "owned", Manifests: "kpaas.local/manifests/owned-" + version + ":1", Timeout: "10m"},
		}}
	}
	e, r, out := platformEnv(t, k, owned("v1"))
	if err := runPhase(e, platformPhase(t)); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	k.Kubectl(nil, "-n", "owned", "get", "configmap", "dropped")
	k.Kubectl(nil, "get", "clusterrole", "kpaas-test-dropped-role")

	// The newer bundle; the power goes while the dropped objects are
	// being deleted.
	e, r, out = platformEnv(t, k, owned("v2"))
	ctx, cancel := context.WithCancel(context.Background())
	cut := false
	e.Host.Exec = cutAt{r: r, cancel: cancel, cut: &cut, at: func(c exec.Cmd) bool { return slices.Contains(c.Args, "delete") }}
	ph := platformPhase(t)
	ph.Retry.Attempts = 1
	(&steps.Runner{Progress: e.Progress}).Run(ctx, phases.Steps(e, []phases.Phase{ph}))
	if !cut {
		t.Fatalf("nothing was deleted:\n%s", out)
	}
	if got := k.Kubectl(nil, "-n", "owned", "get", "configmap", "stays", "-o", "jsonpath={.data.version}"); got != "2" {
		t.Errorf("the newer objects were not applied before the deletion: version %q", got)
	}
	e.Host.Exec = r
	out.Reset()
	if err := runPhase(e, platformPhase(t)); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !strings.Contains(out.String(), "release owned: deleting 2 objects the bundle no longer has: ClusterRole/kpaas-test-dropped-role, ConfigMap/dropped") {
		t.Errorf("no line says what was deleted:\n%s", out)
	}
	if _, err := k.KubectlErr(nil, "-n", "owned", "get", "configmap", "dropped"); err == nil {
		t.Errorf("the dropped ConfigMap is still there")
	}
	if _, err := k.KubectlErr(nil, "get", "clusterrole", "kpaas-test-dropped-role"); err == nil {
		t.Errorf("the dropped ClusterRole is still there")
	}
	k.Kubectl(nil, "-n", "owned", "get", "configmap", "marked-keep")
	if got := k.Kubectl(nil, "-n", "kpaas-system", "get", "configmap", "kpaas-release-owned", "-o", "jsonpath={.data.state} {.data.objects}"); got != "deployed v1 ConfigMap owned stays" {
		t.Errorf("record: %q", got)
	}
}
