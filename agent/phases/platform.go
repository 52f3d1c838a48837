package phases

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	bundlev1 "kpaas.dev/appliance/api/bundle/v1alpha1"
	"kpaas.dev/appliance/internal/bundle"
	"kpaas.dev/appliance/internal/exec"
	"kpaas.dev/appliance/internal/platform"
	"kpaas.dev/appliance/internal/retry"
)

// Names of the platform in the cluster and on the node.
const (
	// ReleaseLabel marks the ConfigMaps in StatusNamespace that record
	// each release's state (kpaas-release-NAME): what it installed (the
	// digest of its source and values), its state and duration.
	ReleaseLabel = "kpaas.dev/release"
	// PlatformSecrets is the folder of the config disk's secrets that holds
	// the platform's per-cluster secrets (one file each).
	PlatformSecrets = "platform"
	// vaultDir keeps, on the first control plane's state partition, what
	// unseals each Vault release again after a reboot (0600).
	vaultDir = "/var/lib/kpaas/platform"
	// PlatformStatusFile holds the releases' last known states on the
	// first control plane, for `kpaas-agent status` (no secrets).
	PlatformStatusFile = "/var/lib/kpaas/platform/status.json"
	// platformParallel bounds how many independent releases install at once.
	platformParallel = 2
	fieldManager     = "kpaas-agent"
)

// applyArgs are kubectl's arguments for the one way the agent applies
// objects (from file, "-" for stdin): server-side apply as the agent's
// field manager, taking over fields others set. --validate=false spares
// kubectl its download of the API server's OpenAPI documents, which it
// makes only to learn whether it may ask for strict validation: on an
// emulated control plane that download timed out (32 s) before the
// first apply of every install. Nothing is lost: the API server refuses
// a field the schema does not declare in a server-side apply whatever
// kubectl asks, for built-in kinds and custom resources alike
// (TestPlatformRefusesUnknownFields).
func applyArgs(file string) []string {
	return []string{"apply", "--server-side", "--force-conflicts", "--field-manager", fieldManager, "--validate=false", "-f", file}
}

// Release states in the records.
const (
	ReleasePending  = "pending"
	ReleaseDeployed = "deployed"
	ReleaseFailed   = "failed"
	ReleaseSkipped  = "skipped"
	// ReleaseDisabled: the site's cluster config turns it off.
	ReleaseDisabled = "disabled"
)

// ReleaseStatus is one release's record, as the status shows it.
type ReleaseStatus struct {
	Name    string  `json:"name"`
	State   string  `json:"state"`
	Seconds float64 `json:"seconds"`
	Digest  string  `json:"digest,omitempty"`
	Error   string  `json:"error,omitempty"`
	URL     string  `json:"url,omitempty"`
}

// platformPhase installs the bundle's platform on the first control
// plane: per-cluster secrets, then every release in dependency order
// (independent ones in parallel, bounded), each behind its gate. A
// release recorded as deployed at the same digest is not applied again;
// a pending or failed one is applied again (server-side apply converges),
// so a power cut anywhere is repaired by the next boot. Other nodes have
// nothing to do: the first control plane publishes the releases' states.
func platformPhase() Phase {
	return Phase{
		Name: "platform",
		Plan: func(e *Env) []string {
			if e.Lock.Platform == nil || len(e.Lock.Platform.Releases) == 0 {
				return []string{"nothing: the bundle has no platform"}
			}
			p, err := sitePlatform(e)
			if err != nil {
				return []string{"cannot install the platform: " + err.Error()}
			}
			if !e.IsFirstControlPlane() {
				return []string{"nothing: the first control plane installs the platform (" + fmt.Sprint(len(p.Releases)) + " releases)"}
			}
			var out []string
			if d := disabledReleases(e); len(d) > 0 {
				out = append(out, "not installed at this site (platform.disable of the cluster config): "+strings.Join(d, ", "))
			}
			for _, s := range p.Secrets {
				var files []string
				for _, part := range s.Parts() {
					if f := path.Join(PlatformSecrets, part.File); !slices.Contains(files, f) {
						files = append(files, f) // a tls secret's ca.crt is its tls.crt's file
					}
				}
				out = append(out, fmt.Sprintf("create Secret %s/%s from the config disk's %s", s.Namespace, s.Name, strings.Join(files, ", ")))
			}
			levels, err := platform.Levels(releaseNodes(p))
			if err != nil {
				return append(out, "cannot order the releases: "+err.Error())
			}
			for i, l := range levels {
				out = append(out, fmt.Sprintf("level %d: install %s (at most %d at once), each behind its gate", i+1, strings.Join(l, ", "), platformParallel))
			}
			return out
		},
		Check: func(ctx context.Context, e *Env) (bool, error) {
			if e.Lock.Platform == nil || len(e.Lock.Platform.Releases) == 0 || !e.IsFirstControlPlane() {
				return true, nil
			}
			in, err := newInstaller(e)
			if err != nil {
				return false, err
			}
			ok, why := in.done(ctx)
			if why != "" {
				e.Progress.Printf("platform: %s", why)
			}
			return ok, nil
		},
		Run: func(ctx context.Context, e *Env) error {
			in, err := newInstaller(e)
			if err != nil {
				return err
			}
			err = in.run(ctx)
			if st, serr := ReleaseStatuses(context.WithoutCancel(ctx), e); serr == nil {
				b, _ := json.MarshalIndent(st, "", "  ")
				e.Host.WriteFile(PlatformStatusFile, append(b, '\n'), 0o644)
			}
			return err
		},
		Retry: retry.Policy{Attempts: 3, Base: 10 * time.Second, Max: 60 * time.Second},
	}
}

// disabledReleases are the names the cluster config's platform.disable
// lists.
func disabledReleases(e *Env) []string {
	if e.Cluster == nil || e.Cluster.Platform == nil {
		return nil
	}
	return e.Cluster.Platform.Disable
}

// sitePlatform is the bundle's platform without the releases this site
// disables. Disabling a release the bundle lacks, or one another kept
// release depends on, is an error that names both.
func sitePlatform(e *Env) (*bundle.LockPlatform, error) {
	p := e.Lock.Platform
	off := disabledReleases(e)
	if p == nil || len(off) == 0 {
		return p, nil
	}
	known := map[string]bool{}
	for _, r := range p.Releases {
		known[r.Name] = true
	}
	disabled := map[string]bool{}
	var errs []error
	for _, name := range off {
		if !known[name] {
			errs = append(errs, fmt.Errorf("platform.disable names %q, which the bundle's platform does not have", name))
		}
		disabled[name] = true
	}
	site := *p
	site.Releases = nil
	for _, r := range p.Releases {
		if disabled[r.Name] {
			continue
		}
		for _, d := range r.DependsOn {
			if disabled[d] {
				errs = append(errs, fmt.Errorf("release %s depends on %s, which platform.disable turns off: disable %s too", r.Name, d, r.Name))
			}
		}
		site.Releases = append(site.Releases, r)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return &site, nil
}

func releaseNodes(p *bundle.LockPlatform) []platform.Node {
	ns := make([]platform.Node, len(p.Releases))
	for i, r := range p.Releases {
		ns[i] = platform.Node{Name: r.Name, DependsOn: r.DependsOn}
	}
	return ns
}

// installer installs one bundle's platform on one cluster.
type installer struct {
	e        *Env
	p        *bundle.LockPlatform
	releases map[string]bundle.LockRelease
	lookup   func(kind, name string) (string, bool)
	secrets  map[string]string
	mu       sync.Mutex
	prepared map[string]*prepared
	// owned is each release's inventory (platform.Inventory) as its
	// record keeps it: the objects it applied last, the ones a newer
	// bundle's release may no longer have.
	owned map[string]string
}

// prepared is a release rendered for this site.
type prepared struct {
	objs   []platform.Object
	digest string
}

func newInstaller(e *Env) (*installer, error) {
	p, err := sitePlatform(e)
	if err != nil {
		return nil, err
	}
	in := &installer{e: e, p: p, releases: map[string]bundle.LockRelease{}, secrets: map[string]string{}, prepared: map[string]*prepared{}, owned: map[string]string{}}
	for _, r := range p.Releases {
		in.releases[r.Name] = r
	}
	var missing []string
	for _, s := range p.Secrets {
		for _, part := range s.Parts() {
			v, err := readSecret(e, path.Join(PlatformSecrets, part.File))
			if err != nil {
				missing = append(missing, bundlev1.SecretRef(s.Name, part.Part))
				continue
			}
			in.secrets[bundlev1.SecretRef(s.Name, part.Part)] = part.Value(v)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("the config disk lacks the platform secrets %s: make them with `kpaas cluster init --bundle MANIFEST` and write the first control plane's config disk again",
			strings.Join(missing, ", "))
	}
	in.lookup = platform.Lookup(platform.Facts(e.Cluster, p.Facts), in.secrets)
	return in, nil
}

func (in *installer) kubectl(ctx context.Context, args ...string) ([]byte, error) {
	return in.e.Host.Run(ctx, "kubectl", append([]string{"--kubeconfig", adminConf}, args...)...)
}

// kubectlIn runs kubectl with stdin; secret marks stdin as secret.
func (in *installer) kubectlIn(ctx context.Context, stdin []byte, secret bool, args ...string) ([]byte, error) {
	c := exec.Command("kubectl", append([]string{"--kubeconfig", adminConf}, args...)...)
	c.Stdin = stdin
	if secret {
		c.Redact = in.secretValues()
	}
	return in.e.Host.RunCmd(ctx, c)
}

func (in *installer) secretValues() []string {
	var out []string
	for _, v := range in.secrets {
		out = append(out, v)
	}
	return out
}

// prepare renders release r for this site (once per run).
func (in *installer) prepare(r bundle.LockRelease) (*prepared, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if p, ok := in.prepared[r.Name]; ok {
		return p, nil
	}
	var p prepared
	switch {
	case r.Chart != "":
		a, data, err := in.artifact(r.Chart)
		if err != nil {
			return nil, err
		}
		c, err := platform.LoadChart(bytes.NewReader(data))
		if err != nil {
			return nil, err
		}
		over, err := platform.ExpandValues(r.Values, in.lookup)
		if err != nil {
			return nil, err
		}
		var base map[string]any
		relName := r.Name
		if a.Chart != nil {
			base = a.Chart.Values
			relName = a.Chart.Release
		}
		values := platform.Merge(base, over)
		if p.objs, err = platform.RenderChart(c, relName, r.Namespace, in.e.Lock.KubernetesVersion, values); err != nil {
			return nil, err
		}
		if p.digest, err = platform.Digest(a.Digest, values); err != nil {
			return nil, err
		}
	case r.Manifests != "":
		a, data, err := in.artifact(r.Manifests)
		if err != nil {
			return nil, err
		}
		if data, err = platform.Substitute(data, r.Substitute, in.lookup); err != nil {
			return nil, err
		}
		if p.objs, err = platform.Decode(data); err != nil {
			return nil, fmt.Errorf("%s: %w", r.Manifests, err)
		}
		if p.digest, err = platform.Digest(a.Digest, data); err != nil {
			return nil, err
		}
	default:
		return nil, errors.New("no source in the bundle's lock")
	}
	in.prepared[r.Name] = &p
	return &p, nil
}

// artifact returns the lock entry of ref and the content of its one
// layer (a chart archive, a manifests stream), read from the bundle.
func (in *installer) artifact(ref string) (*bundle.LockArtifact, []byte, error) {
	for i := range in.e.Lock.Artifacts {
		a := &in.e.Lock.Artifacts[i]
		if a.Ref != ref {
			continue
		}
		h, err := v1.NewHash(a.Digest)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", ref, err)
		}
		mb, err := in.e.Bundle.ReadBlob(h)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", ref, err)
		}
		m, err := v1.ParseManifest(bytes.NewReader(mb))
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", ref, err)
		}
		if len(m.Layers) != 1 {
			return nil, nil, fmt.Errorf("%s: %d layers, want 1", ref, len(m.Layers))
		}
		data, err := in.e.Bundle.ReadBlob(m.Layers[0].Digest)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", ref, err)
		}
		return a, data, nil
	}
	return nil, nil, fmt.Errorf("the bundle holds no artifact %s", ref)
}

// records reads the releases' records from the cluster.
func (in *installer) records(ctx context.Context) (map[string]map[string]string, error) {
	return releaseRecords(ctx, in.e)
}

// releaseRecords reads the releases' records: the first control plane
// lists them with the admin's credentials; any other node gets them by
// name with its kubelet's, which the StatusReaderRole lets every node read.
func releaseRecords(ctx context.Context, e *Env) (map[string]map[string]string, error) {
	args := []string{"--kubeconfig", adminConf, "-n", StatusNamespace, "get", "configmaps", "-l", ReleaseLabel, "-o", "json"}
	if !e.IsFirstControlPlane() {
		p, err := sitePlatform(e)
		if err != nil || p == nil {
			return nil, err
		}
		args = []string{"--kubeconfig", kubeletConf, "-n", StatusNamespace, "get", "configmaps", "--ignore-not-found", "-o", "json"}
		for _, r := range p.Releases {
			args = append(args, releaseRecordName(r.Name))
		}
	}
	out, err := e.Host.Run(ctx, "kubectl", args...)
	if err != nil {
		return nil, err
	}
	recs := map[string]map[string]string{}
	if len(bytes.TrimSpace(out)) == 0 {
		return recs, nil // by name, none found
	}
	type record struct {
		Metadata struct {
			Labels map[string]string `json:"labels"`
		} `json:"metadata"`
		Data map[string]string `json:"data"`
	}
	// A list, or one object when one name was asked for.
	var list struct {
		Kind  string   `json:"kind"`
		Items []record `json:"items"`
		record
	}
	if err := json.Unmarshal(out, &list); err != nil {
		return nil, fmt.Errorf("reading the release records: %w", err)
	}
	if list.Kind == "ConfigMap" {
		list.Items = []record{list.record}
	}
	for _, it := range list.Items {
		if name := it.Metadata.Labels[ReleaseLabel]; name != "" {
			recs[name] = it.Data
		}
	}
	return recs, nil
}

// releaseRecordName is the name of release name's record ConfigMap.
func releaseRecordName(name string) string { return "kpaas-release-" + name }

// StatusReaderRole names the Role (and its RoleBinding) in StatusNamespace
// that lets every node (group system:nodes) get the releases' records,
// and nothing else: the other nodes' agents show the platform's progress.
const StatusReaderRole = "kpaas-platform-status"

// grantNodesRead lets every node's kubelet credentials get the records of
// the site's releases (by name; no list, no other ConfigMap).
func (in *installer) grantNodesRead(ctx context.Context) error {
	var names []any
	for _, r := range in.p.Releases {
		names = append(names, releaseRecordName(r.Name))
	}
	rbac := "rbac.authorization.k8s.io"
	role := platform.Object{
		"apiVersion": rbac + "/v1", "kind": "Role",
		"metadata": map[string]any{"name": StatusReaderRole, "namespace": StatusNamespace},
		"rules": []any{map[string]any{
			"apiGroups": []any{""}, "resources": []any{"configmaps"}, "verbs": []any{"get"}, "resourceNames": names,
		}},
	}
	binding := platform.Object{
		"apiVersion": rbac + "/v1", "kind": "RoleBinding",
		"metadata": map[string]any{"name": StatusReaderRole, "namespace": StatusNamespace},
		"roleRef":  map[string]any{"apiGroup": rbac, "kind": "Role", "name": StatusReaderRole},
		"subjects": []any{map[string]any{"apiGroup": rbac, "kind": "Group", "name": "system:nodes"}},
	}
	b, err := platform.Stream([]platform.Object{namespaceObject(StatusNamespace), role, binding})
	if err != nil {
		return err
	}
	_, err = in.kubectlIn(ctx, b, false, applyArgs("-")...)
	return err
}

// ReleaseStatuses are the releases of the bundle's platform in the
// order the lock lists them, each with its record's state ("" when it has
// none yet).
func ReleaseStatuses(ctx context.Context, e *Env) ([]ReleaseStatus, error) {
	if e.Lock.Platform == nil {
		return nil, nil
	}
	recs, err := releaseRecords(ctx, e)
	if err != nil {
		return nil, err
	}
	var out []ReleaseStatus
	off := map[string]bool{}
	for _, name := range disabledReleases(e) {
		off[name] = true
	}
	for _, r := range e.Lock.Platform.Releases {
		if off[r.Name] {
			out = append(out, ReleaseStatus{Name: r.Name, State: ReleaseDisabled})
			continue
		}
		rec := recs[r.Name]
		var secs float64
		fmt.Sscanf(rec["seconds"], "%g", &secs)
		out = append(out, ReleaseStatus{Name: r.Name, State: rec["state"], Seconds: secs, Digest: rec["digest"], Error: rec["error"], URL: rec["url"]})
	}
	return out, nil
}

// done reports whether every release is deployed at the digest this site
// gives it and passes its gate now. When a deployed release does not pass
// (or the records cannot be read), why says so: a check that fails right
// after a run is otherwise a mystery.
func (in *installer) done(ctx context.Context) (ok bool, why string) {
	recs, err := in.records(ctx)
	if err != nil {
		return false, "reading the releases' records: " + err.Error()
	}
	for _, r := range in.p.Releases {
		p, err := in.prepare(r)
		if err != nil {
			return false, ""
		}
		rec := recs[r.Name]
		if rec["state"] != ReleaseDeployed || rec["digest"] != p.digest {
			return false, ""
		}
		if r.Vault {
			if st, err := in.vaultStatus(ctx, r); err != nil || !st.Initialized || st.Sealed {
				return false, "release " + r.Name + ": Vault not initialised and unsealed"
			}
		}
		if ok, reasons := in.gate(ctx, r, p); !ok {
			return false, "release " + r.Name + ": gate not passing: " + strings.Join(reasons, "; ")
		}
	}
	return true, ""
}

func (in *installer) run(ctx context.Context) error {
	if err := in.grantNodesRead(ctx); err != nil {
		return retry.Retryable(fmt.Errorf("letting the nodes read the releases' records: %w", err))
	}
	if err := in.applySecrets(ctx); err != nil {
		return retry.Retryable(fmt.Errorf("creating the platform's secrets: %w", err))
	}
	// Every record written from here on keeps its release's inventory.
	recs, err := in.records(ctx)
	if err != nil {
		return retry.Retryable(fmt.Errorf("reading the releases' records: %w", err))
	}
	for name, rec := range recs {
		in.setOwned(name, rec[ownedKey])
	}
	total := len(in.p.Releases)
	var n int
	var nmu sync.Mutex
	res, err := platform.Schedule(ctx, releaseNodes(in.p), platformParallel, func(ctx context.Context, name string) error {
		start := in.e.now()
		err := in.install(ctx, in.releases[name])
		nmu.Lock()
		n++
		i := n
		nmu.Unlock()
		d := in.e.now().Sub(start).Round(100 * time.Millisecond)
		if err != nil {
			in.e.Progress.Printf("release %s (%d/%d): failed after %s: %v", name, i, total, d, err)
		} else {
			in.e.Progress.Printf("release %s (%d/%d): done in %s", name, i, total, d)
		}
		return err
	})
	if err != nil {
		return err
	}
	var errs []error
	for _, r := range in.p.Releases {
		if e := res[r.Name]; e != nil {
			if errors.Is(e, platform.ErrSkipped) {
				in.record(ctx, r, ReleaseSkipped, "", 0, e)
			}
			errs = append(errs, fmt.Errorf("release %s: %w", r.Name, e))
		}
	}
	if len(errs) > 0 {
		// A gate that timed out may pass on the next try (images still
		// being pulled on a slow disk): the step runner tries again.
		return retry.Retryable(errors.Join(errs...))
	}
	return nil
}

// applySecrets creates the platform's per-cluster secrets as Kubernetes
// Secrets (and their namespaces).
func (in *installer) applySecrets(ctx context.Context) error {
	if len(in.p.Secrets) == 0 {
		return nil
	}
	var items []platform.Object
	nss := map[string]bool{}
	for _, s := range in.p.Secrets {
		if !nss[s.Namespace] {
			nss[s.Namespace] = true
			items = append(items, namespaceObject(s.Namespace))
		}
	}
	for _, s := range in.p.Secrets {
		typ := "Opaque"
		if s.Type == bundlev1.SecretTLS {
			typ = "kubernetes.io/tls"
		}
		data := map[string]any{}
		for _, part := range s.Parts() {
			data[part.Key] = in.secrets[bundlev1.SecretRef(s.Name, part.Part)]
		}
		items = append(items, platform.Object{
			"apiVersion": "v1", "kind": "Secret", "type": typ,
			"metadata":   map[string]any{"name": s.Name, "namespace": s.Namespace, "labels": map[string]any{"app.kubernetes.io/managed-by": "kpaas"}},
			"stringData": data,
		})
	}
	b, err := platform.Stream(items)
	if err != nil {
		return err
	}
	_, err = in.kubectlIn(ctx, b, true, applyArgs("-")...)
	return err
}

func namespaceObject(ns string) platform.Object {
	return platform.Object{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns}}
}

// install installs release r, unless it is deployed at the same digest,
// then waits for its gate.
func (in *installer) install(ctx context.Context, r bundle.LockRelease) error {
	start := in.e.now()
	timeout, err := time.ParseDuration(r.Timeout)
	if err != nil || timeout <= 0 {
		timeout = 10 * time.Minute
	}
	if in.e.Wait > 0 {
		timeout = time.Duration(float64(timeout) * in.e.Wait)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	p, err := in.prepare(r)
	if err != nil {
		in.record(ctx, r, ReleaseFailed, "", 0, err)
		return err
	}
	recs, err := in.records(ctx)
	if err != nil {
		return err
	}
	rec := recs[r.Name]
	// Until the new objects are applied and the dropped ones deleted, the
	// record keeps what the release owned before (run read it): a power
	// cut in between deletes them on the next boot.
	if rec["state"] != ReleaseDeployed || rec["digest"] != p.digest {
		if err := in.record(ctx, r, ReleasePending, p.digest, 0, nil); err != nil {
			return err
		}
		n := fmt.Sprintf("%d objects", len(p.objs))
		if len(p.objs) == 1 {
			n = "1 object"
		}
		in.e.Progress.Printf("release %s: applying %s into %s (timeout %s)", r.Name, n, r.Namespace, timeout)
		if err := in.apply(ctx, r, p.objs); err != nil {
			in.record(context.WithoutCancel(ctx), r, ReleaseFailed, p.digest, in.e.now().Sub(start).Seconds(), err)
			return err
		}
		owned := platform.Inventory(p.objs, r.Namespace)
		if err := in.prune(ctx, r, rec[ownedKey], owned); err != nil {
			in.record(context.WithoutCancel(ctx), r, ReleaseFailed, p.digest, in.e.now().Sub(start).Seconds(), err)
			return err
		}
		in.setOwned(r.Name, owned)
	}
	if r.Vault {
		if err := in.unsealVault(ctx, r); err != nil {
			in.record(context.WithoutCancel(ctx), r, ReleaseFailed, p.digest, in.e.now().Sub(start).Seconds(), err)
			return err
		}
	}
	if err := in.waitGate(ctx, r, p, start); err != nil {
		in.record(context.WithoutCancel(ctx), r, ReleaseFailed, p.digest, in.e.now().Sub(start).Seconds(), err)
		return err
	}
	secs := in.e.now().Sub(start).Seconds()
	if rec["state"] == ReleaseDeployed && rec["digest"] == p.digest {
		return nil // the record stands; its duration is the install's
	}
	return in.record(ctx, r, ReleaseDeployed, p.digest, secs, nil)
}

// ownedKey is the record's key of the release's inventory.
const ownedKey = "objects"

func (in *installer) setOwned(release, inventory string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.owned[release] = inventory
}

// prune deletes the objects the release owned before (old) and no longer
// has (cur): what a newer bundle dropped. CRDs, namespaces and objects
// marked helm.sh/resource-policy: keep are never deleted
// (platform.Inventory leaves them out). An object whose kind the cluster
// no longer serves is gone already.
func (in *installer) prune(ctx context.Context, r bundle.LockRelease, old, cur string) error {
	gone := platform.Dropped(old, cur)
	if len(gone) == 0 {
		return nil
	}
	var ids []string
	for _, o := range gone {
		ids = append(ids, o.Kind()+"/"+o.Name())
	}
	in.e.Progress.Printf("release %s: deleting %d objects the bundle no longer has: %s", r.Name, len(gone), strings.Join(ids, ", "))
	b, err := platform.Stream(gone)
	if err != nil {
		return err
	}
	_, err = in.kubectlIn(ctx, b, false, "delete", "--ignore-not-found", "--wait=false", "-f", "-")
	if err == nil || kindGone(err) {
		return nil
	}
	return fmt.Errorf("deleting the objects the bundle dropped: %w", err)
}

// kindGone reports whether every error kubectl delete printed says that
// the cluster does not serve an object's kind (any more).
func kindGone(err error) bool {
	n := 0
	for _, l := range strings.Split(err.Error(), "\n") {
		if !strings.Contains(l, "error") && !strings.Contains(l, "Error") {
			continue
		}
		n++
		if !strings.Contains(l, "no matches for kind") && !strings.Contains(l, "the server could not find the requested resource") {
			return false
		}
	}
	return n > 0
}

// apply applies objs with server-side apply: the release's namespace,
// then its CRDs, waiting until they are established, then everything
// else, one kubectl per namespace the objects name.
func (in *installer) apply(ctx context.Context, r bundle.LockRelease, objs []platform.Object) error {
	crds, groups := platform.Split(objs)
	nss := []platform.Object{namespaceObject(r.Namespace)}
	seen := map[string]bool{r.Namespace: true}
	for _, g := range groups {
		if g.Namespace != "" && !seen[g.Namespace] {
			seen[g.Namespace] = true
			nss = append(nss, namespaceObject(g.Namespace))
		}
	}
	if err := in.applyList(ctx, append(nss, crds...), ""); err != nil {
		return err
	}
	// CRDs first, then everything but the resources of CRDs that are not
	// established yet because their conversion webhook waits for a CA
	// that a controller of this very release injects; those last, once
	// their CRD is established.
	waiting, err := in.establish(ctx, crds)
	if err != nil {
		return err
	}
	var later []platform.Object
	for _, g := range groups {
		var now []platform.Object
		for _, o := range g.Objects {
			if waiting[o.TypeKey()] {
				if g.Namespace == "" {
					o = withNamespace(o, r.Namespace)
				}
				later = append(later, o)
				continue
			}
			now = append(now, o)
		}
		ns := ""
		if g.Namespace == "" {
			ns = r.Namespace
		}
		if err := in.applyList(ctx, now, ns); err != nil {
			return err
		}
	}
	if len(later) > 0 {
		var names []platform.Object
		for _, c := range crds {
			if waiting[c.TypeKey()] {
				names = append(names, c)
			}
		}
		for {
			w, err := in.establish(ctx, names)
			if err != nil {
				return err
			}
			if len(w) == 0 {
				break
			}
			if err := in.e.sleep(ctx, 3*time.Second); err != nil {
				return fmt.Errorf("CRDs %v wait for their conversion webhook's CA bundle", keys(w))
			}
		}
		return in.applyList(ctx, later, "")
	}
	return nil
}

// establish waits until every CRD of crds is established or waits for
// its webhook's CA bundle, and returns the GROUP/KIND of the latter.
func (in *installer) establish(ctx context.Context, crds []platform.Object) (map[string]bool, error) {
	if len(crds) == 0 {
		return nil, nil
	}
	for {
		b, err := platform.Stream(crds)
		if err != nil {
			return nil, err
		}
		out, err := in.kubectlIn(ctx, b, false, "get", "-f", "-", "-o", "json")
		if err != nil {
			return nil, fmt.Errorf("reading the CRDs: %w", err)
		}
		live, err := platform.Decode(out)
		if err != nil {
			return nil, err
		}
		waiting := map[string]bool{}
		var pending []string
		for _, c := range live {
			ok, ca := platform.CRDState(c)
			switch {
			case ca:
				waiting[c.TypeKey()] = true
			case !ok:
				pending = append(pending, c.Name())
			}
		}
		if len(pending) == 0 {
			return waiting, nil
		}
		if err := in.e.sleep(ctx, secondDur); err != nil {
			return nil, fmt.Errorf("CRDs not established: %s", strings.Join(pending, ", "))
		}
	}
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// applyList applies objs, in namespace ns where they name none (unless
// ns is empty).
func (in *installer) applyList(ctx context.Context, objs []platform.Object, ns string) error {
	if len(objs) == 0 {
		return nil
	}
	b, err := platform.Stream(objs)
	if err != nil {
		return err
	}
	args := applyArgs("-")
	if ns != "" {
		args = append(args, "-n", ns)
	}
	for {
		_, err = in.kubectlIn(ctx, b, true, args...)
		if err == nil || !webhookNotReady(err) {
			return err
		}
		// An admission webhook of this release (cert-manager's, say) does
		// not answer yet: kubectl applied every other object; its pods
		// start, then the refused objects go in.
		if serr := in.e.sleep(ctx, 5*time.Second); serr != nil {
			return err
		}
	}
}

// webhookNotReady reports whether kubectl failed because an admission
// webhook's service does not answer (yet).
func webhookNotReady(err error) bool {
	s := err.Error()
	return strings.Contains(s, "failed calling webhook") || strings.Contains(s, "no endpoints available for service")
}

// A gate is looked at again after gateFirstPause, then less and less
// often up to gateMaxPause: each look starts kubectl a few times, and on
// a slow control plane a release that takes many minutes (Harbor's schema
// migrations) would otherwise keep the API server busy answering it.
const (
	gateFirstPause = 3 * time.Second
	gateMaxPause   = 15 * time.Second
	// gateHeartbeat is how often a release waiting for its gate says what
	// it waits for.
	gateHeartbeat = time.Minute
)

// waitGate polls the gate until it passes, a failure that waiting cannot
// mend shows, or ctx ends (the release's timeout): the error names the
// release's objects that are not ready and why.
func (in *installer) waitGate(ctx context.Context, r bundle.LockRelease, p *prepared, start time.Time) error {
	pause := gateFirstPause
	said := in.e.now()
	for {
		ok, reasons := in.gate(ctx, r, p)
		if ok {
			return nil
		}
		// A heartbeat on a long wait: what the gate waits for now.
		if now := in.e.now(); now.Sub(said) >= gateHeartbeat {
			said = now
			first, _, _ := strings.Cut(reasons[0], "\n")
			more := ""
			if len(reasons) > 1 {
				more = fmt.Sprintf(" (and %d more)", len(reasons)-1)
			}
			in.e.Progress.Printf("release %s: waiting for its gate, %s so far: %s%s", r.Name, now.Sub(start).Round(time.Second), first, more)
			// The API server does not answer: say why, from this node.
			if apiUnreachable(first) && in.e.IsControlPlane() {
				if st := controlPlaneState(ctx, in.e); st != "" {
					in.e.Progress.Printf("release %s: the API server does not answer; on this node: %s", r.Name, st)
				}
			}
		}
		err := in.e.sleep(ctx, pause)
		pause = min(pause*3/2, gateMaxPause)
		if err != nil {
			// The time is up: look once more, with time to ask, so that
			// the report is whole (pods, logs).
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			if ok, last := in.gate(rctx, r, p); !ok {
				reasons = last
			}
			return fmt.Errorf("gate not passed in %s:\n  %s", r.Timeout, strings.Join(reasons, "\n  "))
		}
	}
}

// gate evaluates r's gate once: the default checks of its objects (unless
// skipped), then its conditions. When it does not pass, reasons say why.
func (in *installer) gate(ctx context.Context, r bundle.LockRelease, p *prepared) (bool, []string) {
	var reasons []string
	if !r.Gate.Skip {
		var gated []platform.Object
		for _, o := range p.objs {
			if platform.Gated(o) {
				if !o.IsCRD() && o.Namespace() == "" {
					o = withNamespace(o, r.Namespace)
				}
				gated = append(gated, o)
			}
		}
		if len(gated) > 0 {
			b, err := platform.Stream(gated)
			if err != nil {
				return false, []string{err.Error()}
			}
			out, err := in.kubectlIn(ctx, b, false, "get", "-f", "-", "-o", "json")
			if err != nil {
				return false, []string{err.Error()}
			}
			live, err := platform.Decode(out)
			if err != nil {
				return false, []string{err.Error()}
			}
			var pods map[string][]platform.Object
			for _, o := range live {
				if ok, why := platform.Evaluate(o); !ok {
					if pods == nil {
						pods = in.pods(ctx, live)
					}
					reasons = append(reasons, in.explain(ctx, o, why, pods[o.Namespace()]))
				}
			}
		}
	}
	for _, c := range r.Gate.Conditions {
		ns := c.Namespace
		if ns == "" {
			ns = r.Namespace
		}
		if c.Service != "" {
			name, port, _ := strings.Cut(c.Service, ":")
			out, err := in.kubectl(ctx, "-n", ns, "get", "service", name, "-o", "jsonpath={.spec.clusterIP}")
			ip := strings.TrimSpace(string(out))
			if err != nil || ip == "" || ip == "None" {
				reasons = append(reasons, fmt.Sprintf("service %s in %s: no cluster IP", name, ns))
				continue
			}
			if err := in.e.Dial(ctx, ip+":"+port); err != nil {
				reasons = append(reasons, fmt.Sprintf("service %s in %s does not answer on %s:%s: %v", name, ns, ip, port, err))
			}
			continue
		}
		out, err := in.kubectl(ctx, "-n", ns, "get", c.Object, "-o", "jsonpath="+c.JSONPath)
		got := strings.TrimSpace(string(out))
		switch {
		case err != nil:
			reasons = append(reasons, fmt.Sprintf("%s in %s: %v", c.Object, ns, err))
		case got != c.Equals:
			reasons = append(reasons, fmt.Sprintf("%s in %s: %s is %q, want %q", c.Object, ns, c.JSONPath, got, c.Equals))
		}
	}
	sort.Strings(reasons)
	return len(reasons) == 0, reasons
}

func withNamespace(o platform.Object, ns string) platform.Object {
	c := platform.Object{}
	for k, v := range o {
		c[k] = v
	}
	md := map[string]any{}
	if m, ok := o["metadata"].(map[string]any); ok {
		for k, v := range m {
			md[k] = v
		}
	}
	md["namespace"] = ns
	c["metadata"] = md
	return c
}

// pods lists the pods of the namespaces of objs, by namespace.
func (in *installer) pods(ctx context.Context, objs []platform.Object) map[string][]platform.Object {
	out := map[string][]platform.Object{}
	for _, o := range objs {
		ns := o.Namespace()
		if ns == "" || out[ns] != nil {
			continue
		}
		b, err := in.kubectl(ctx, "-n", ns, "get", "pods", "-o", "json")
		if err != nil {
			continue
		}
		ps, _ := platform.Decode(b)
		out[ns] = append([]platform.Object{}, ps...)
	}
	return out
}

// explain says why workload o is not ready: its reason, and what is wrong
// with the first of its pods that is not running (with the last lines of
// a crash-looping container's log).
func (in *installer) explain(ctx context.Context, o platform.Object, why string, pods []platform.Object) string {
	s := o.ID() + ": " + why
	for _, p := range pods {
		if !platform.Selects(o, p) {
			continue
		}
		pr, ok := platform.DiagnosePod(p)
		if ok {
			continue
		}
		s += "; " + pr.String()
		if pr.Reason == "CrashLoopBackOff" || pr.Reason == "Error" {
			logs, err := in.kubectl(ctx, "-n", p.Namespace(), "logs", pr.Pod, "-c", pr.Container, "--previous", "--tail", "5")
			if err == nil && len(bytes.TrimSpace(logs)) > 0 {
				s += "; last log lines:\n    " + strings.ReplaceAll(strings.TrimSpace(string(logs)), "\n", "\n    ")
			}
		}
		break
	}
	return s
}

// record writes release r's record ConfigMap.
func (in *installer) record(ctx context.Context, r bundle.LockRelease, state, digest string, secs float64, rerr error) error {
	data := map[string]any{
		"release": r.Name, "namespace": r.Namespace, "state": state, "digest": digest,
		"seconds": fmt.Sprintf("%.1f", secs), "updated": in.e.now().UTC().Format(time.RFC3339),
	}
	if rerr != nil {
		data["error"] = redact(rerr.Error(), in.secretValues())
	}
	in.mu.Lock()
	if owned := in.owned[r.Name]; owned != "" {
		data[ownedKey] = owned
	}
	in.mu.Unlock()
	if url, m := expandURL(r.URL, in.lookup); url != "" && len(m) == 0 {
		data["url"] = url
	}
	cm := platform.Object{
		"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": releaseRecordName(r.Name), "namespace": StatusNamespace,
			"labels": map[string]any{ReleaseLabel: r.Name}},
		"data": data,
	}
	b, err := platform.Stream([]platform.Object{namespaceObject(StatusNamespace), cm})
	if err != nil {
		return err
	}
	_, err = in.kubectlIn(ctx, b, false, applyArgs("-")...)
	return err
}

func expandURL(u string, lookup func(kind, name string) (string, bool)) (string, []string) {
	if u == "" {
		return "", nil
	}
	return bundlev1.Expand(u, lookup)
}

// redact replaces every secret value in s.
func redact(s string, secrets []string) string {
	for _, v := range secrets {
		if v != "" {
			s = strings.ReplaceAll(s, v, "<redacted>")
		}
	}
	return s
}
