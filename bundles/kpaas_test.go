package bundles_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"helm.sh/helm/v3/pkg/chartutil"

	bundlev1 "kpaas.dev/appliance/api/bundle/v1alpha1"
	cluster "kpaas.dev/appliance/api/cluster/v1alpha1"
	"kpaas.dev/appliance/builder/bake"
	"kpaas.dev/appliance/builder/charts"
	"kpaas.dev/appliance/internal/clustersecrets"
	"kpaas.dev/appliance/internal/kubetest"
	"kpaas.dev/appliance/internal/platform"
)

var update = flag.Bool("update", false, "rewrite testdata/kpaas-1.4.1.images")

const kpaasSite = `apiVersion: kpaas.dev/v1alpha1
kind: Cluster
metadata: {name: kpaas}
controlPlaneEndpoint: {host: 10.0.0.11}
nodes:
  - {name: cp1, role: control-plane, address: 10.0.0.11/24}
  - {name: w1, role: worker, address: 10.0.0.21/24}
platform: {storage: nfs, nfsServer: 10.0.0.5}
`

// rendered is one release of the platform, rendered for the test site.
type rendered struct {
	release bundlev1.Release
	objs    []platform.Object
}

// renderPlatform renders every release of manifest m as the agent does:
// charts with the bundle's values and the release's (facts and secrets
// put in), manifests with their placeholders substituted.
// secrets nil generates the site's platform secrets as `kpaas cluster
// init` does; renderPlatform returns those it used.
func renderPlatform(t *testing.T, file, site string, secrets map[string]string) (*bundlev1.Bundle, []rendered, map[string]string) {
	t.Helper()
	m, err := bundlev1.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	c, err := cluster.Parse("site.yaml", []byte(site))
	if err != nil {
		t.Fatal(err)
	}
	if secrets == nil {
		secrets = siteSecrets(t, m)
	}
	lookup := platform.Lookup(platform.Facts(c, m.Platform.Facts), secrets)
	base := filepath.Dir(file)
	var out []rendered
	for _, r := range m.Platform.Releases {
		var objs []platform.Object
		switch {
		case r.Chart != "":
			i := slices.IndexFunc(m.Charts, func(c bundlev1.Chart) bool { return c.Release == r.Chart })
			spec := m.Charts[i]
			ch, err := charts.Load(filepath.Join(base, spec.Source))
			if err != nil {
				t.Fatal(err)
			}
			values := map[string]any{}
			for _, f := range spec.ValuesFiles {
				v, err := chartutil.ReadValuesFile(filepath.Join(base, f))
				if err != nil {
					t.Fatal(err)
				}
				values = platform.Merge(values, v)
			}
			values = platform.Merge(values, spec.Values)
			over, err := platform.ExpandValues(r.Values, lookup)
			if err != nil {
				t.Fatalf("release %s: %v", r.Name, err)
			}
			if objs, err = platform.RenderChart(ch, spec.Release, r.Namespace, m.Kubernetes.Version, platform.Merge(values, over)); err != nil {
				t.Fatalf("release %s: %v", r.Name, err)
			}
		case len(r.Manifests) > 0:
			var data []byte
			for _, p := range r.Manifests {
				b, err := os.ReadFile(filepath.Join(base, p))
				if err != nil {
					t.Fatal(err)
				}
				data = append(append(data, "\n---\n"...), b...)
			}
			data, err := platform.Substitute(data, r.Substitute, lookup)
			if err != nil {
				t.Fatalf("release %s: %v", r.Name, err)
			}
			if strings.Contains(string(data), "{NFS_SERVER_PRIVATE_IP}") {
				t.Errorf("release %s: a placeholder is left", r.Name)
			}
			if objs, err = platform.Decode(data); err != nil {
				t.Fatalf("release %s: %v", r.Name, err)
			}
		case r.Kustomize != "":
			data, err := bake.Kustomize(base, r.Kustomize)
			if err != nil {
				t.Fatalf("release %s: %v", r.Name, err)
			}
			if objs, err = platform.Decode(data); err != nil {
				t.Fatalf("release %s: %v", r.Name, err)
			}
		default:
			t.Fatalf("release %s: no source", r.Name)
		}
		out = append(out, rendered{r, objs})
	}
	return m, out, secrets
}

// checkRendersSame renders file's platform again for the same site and
// secrets (a release applied again after a power cut or a gate's
// timeout) and fails t for every object that differs from rs: something
// a chart makes up on each render (Harbor's internal secrets, when not
// given) would roll the release's workloads. known names the objects
// (KIND/NAME) known to differ, with why; one of them that renders the
// same fails t too, so that the list stays true.
func checkRendersSame(t *testing.T, file, site string, rs []rendered, secrets map[string]string, known map[string]string) {
	t.Helper()
	_, again, _ := renderPlatform(t, file, site, secrets)
	differs := map[string]bool{}
	for i, r := range rs {
		if len(r.objs) != len(again[i].objs) {
			t.Errorf("release %s renders %d objects, then %d", r.release.Name, len(r.objs), len(again[i].objs))
			continue
		}
		for j, o := range r.objs {
			a, _ := json.Marshal(o)
			b, _ := json.Marshal(again[i].objs[j])
			id := o.Kind() + "/" + o.Name()
			if bytes.Equal(a, b) {
				continue
			}
			differs[id] = true
			if known[id] == "" {
				t.Errorf("release %s: %s renders differently the second time", r.release.Name, id)
			}
		}
	}
	for id, why := range known {
		if !differs[id] {
			t.Errorf("%s renders the same twice now (it differed: %s): take it off the list", id, why)
		}
	}
}

// siteSecrets generates m's platform secrets in a site folder as `kpaas
// cluster init --bundle` does and reads them back as the agent does, by
// reference (NAME, NAME/PART).
func siteSecrets(t *testing.T, m *bundlev1.Bundle) map[string]string {
	t.Helper()
	dir := t.TempDir()
	if _, err := clustersecrets.GeneratePlatform(dir, m.Platform.Secrets); err != nil {
		t.Fatal(err)
	}
	secrets := map[string]string{}
	for _, s := range m.Platform.Secrets {
		for _, part := range s.Parts() {
			b, err := clustersecrets.ReadPlatform(dir, part.File)
			if err != nil {
				t.Fatal(err)
			}
			secrets[bundlev1.SecretRef(s.Name, part.Part)] = part.Value(string(b))
		}
	}
	return secrets
}

// removedAfter125 are the API versions the bundle's objects use that
// Kubernetes v1.25 (the bundle's) serves and later versions removed.
var removedAfter125 = map[string]bool{
	"autoscaling/v2beta2/HorizontalPodAutoscaler": true,
	"autoscaling/v2beta1/HorizontalPodAutoscaler": true,
	"policy/v1beta1/PodSecurityPolicy":            true,
	"batch/v1beta1/CronJob":                       true,
}

func normalize(t *testing.T, ref string) string {
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatalf("image %q: %v", ref, err)
	}
	return r.Name()
}

// The real K-PaaS 1.4.1 platform (its charts with their values, its
// manifests with the site's facts) applied in dependency order to a real
// API server: every object is accepted, CRDs are established before their
// resources. The images the rendered objects name are compared with the
// bundle's: the manifests releases' images must be in its image list, and
// the whole set must equal testdata/kpaas-1.4.1.images (-update rewrites
// it after a deliberate change).
func TestKPaaSPlatformAppliesToRealAPIServer(t *testing.T) {
	m, rs, secrets := renderPlatform(t, "kpaas-1.4.1.yaml", kpaasSite, nil)
	// Notary's CA and signer certificate come from the site
	// (notary.secretName): nothing renders differently.
	checkRendersSame(t, "kpaas-1.4.1.yaml", kpaasSite, rs, secrets, nil)
	checkNotarySecret(t, m, rs)

	listed := map[string]bool{}
	for _, img := range m.Images {
		listed[normalize(t, img.Ref)] = true
	}
	var all []string
	for _, r := range rs {
		if r.release.Name == "harbor" {
			checkNoDefaultSecrets(t, r)
		}
		for _, img := range platform.Images(r.objs) {
			all = append(all, normalize(t, img))
			if r.release.Chart == "" && !listed[normalize(t, img)] && !excluded(m, img) {
				t.Errorf("release %s names %s, which the bundle's images do not list", r.release.Name, img)
			}
		}
	}
	slices.Sort(all)
	all = slices.Compact(all)
	got := strings.Join(all, "\n") + "\n"
	golden := filepath.Join("testdata", "kpaas-1.4.1.images")
	if *update {
		os.MkdirAll("testdata", 0o755)
		os.WriteFile(golden, []byte(got), 0o644)
	}
	if want, err := os.ReadFile(golden); err != nil || string(want) != got {
		t.Errorf("the platform's images differ from %s (go test -update rewrites it):\n%s", golden, got)
	}

	if testing.Short() {
		t.Skip("applies ~700 objects to a real API server (3 minutes on two cores)")
	}
	k := kubetest.Start(t)
	byName := map[string]rendered{}
	var nodes []platform.Node
	for _, r := range rs {
		byName[r.release.Name] = r
		nodes = append(nodes, platform.Node{Name: r.release.Name, DependsOn: r.release.DependsOn})
	}
	levels, err := platform.Levels(nodes)
	if err != nil {
		t.Fatal(err)
	}
	applied, deferred := 0, 0
	var webhooks []platform.Object
	old := map[string]int{}
	for _, level := range levels {
		for _, n := range level {
			r := byName[n]
			crds, groups := platform.Split(r.objs)
			ns := []platform.Object{{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": r.release.Namespace}}}
			apply(t, k, "", append(ns, crds...))
			// CRDs established; those whose conversion webhook waits for
			// cert-manager's CA injection (nothing runs here) hold back
			// their resources, as the agent does.
			waiting := map[string]bool{}
			for _, c := range crds {
				k.Eventually(2*time.Minute, func() error {
					out, err := k.KubectlErr(nil, "get", "customresourcedefinition", c.Name(), "-o", "json")
					if err != nil {
						return err
					}
					live, err := platform.Decode([]byte(out))
					if err != nil || len(live) != 1 {
						return fmt.Errorf("CRD %s: %v", c.Name(), err)
					}
					ok, ca := platform.CRDState(live[0])
					if ca {
						waiting[c.TypeKey()] = true
						return nil
					}
					if !ok {
						return fmt.Errorf("CRD %s not established: %v", c.Name(), live[0]["status"])
					}
					return nil
				})
			}
			for w := range waiting {
				t.Logf("release %s: CRD %s waits for its conversion webhook's CA", n, w)
			}
			for _, g := range groups {
				for _, o := range g.Objects {
					if ns := o.Namespace(); ns != "" {
						apply(t, k, "", []platform.Object{{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns}}})
					}
				}
				target := ""
				if g.Namespace == "" {
					target = r.release.Namespace
				}
				var now []platform.Object
				for _, o := range g.Objects {
					switch {
					case waiting[o.TypeKey()]:
						deferred++
						continue
					case removedAfter125[o.APIVersion()+"/"+o.Kind()]:
						// The bundle installs Kubernetes v1.25.6; the test's
						// API server is the toolchain's, which no longer
						// serves these.
						old[o.APIVersion()+"/"+o.Kind()]++
						continue
					case strings.HasSuffix(o.Kind(), "WebhookConfiguration"):
						// Applied last: nothing runs here to answer them.
						webhooks = append(webhooks, o)
						continue
					}
					now = append(now, o)
				}
				apply(t, k, target, now)
				applied += len(now)
			}
			applied += len(crds)
		}
	}
	for kind, n := range old {
		t.Logf("%d objects of %s left out: served by Kubernetes v1.25 (the bundle's), not by the test's API server", n, kind)
	}
	apply(t, k, "", webhooks)
	applied += len(webhooks)
	if applied < 50 {
		t.Errorf("only %d objects applied", applied)
	}
	t.Logf("%d objects of %d releases applied in %d levels, %d held back for CRDs that wait for a CA", applied, len(rs), len(levels), deferred)
}

// excluded reports whether the manifest leaves img out on purpose.
func excluded(m *bundlev1.Bundle, img string) bool {
	for _, e := range m.Exclude {
		if ok, _ := path.Match(e.Image, img); ok || e.Image == img {
			return true
		}
	}
	return false
}

func apply(t *testing.T, k *kubetest.Env, ns string, objs []platform.Object) {
	t.Helper()
	if len(objs) == 0 {
		return
	}
	b, err := platform.Stream(objs)
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"apply", "--server-side", "--force-conflicts", "--field-manager", "kpaas-agent", "-f", "-"}
	if ns != "" {
		args = append(args, "-n", ns)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		_, err := k.KubectlErr(b, args...)
		if err == nil {
			return
		}
		// A webhook Service without endpoints (ingress-nginx's admission) is
		// not an object refused: the agent retries as well.
		if time.Now().After(deadline) || !strings.Contains(err.Error(), "failed calling webhook") {
			t.Fatalf("%v", err)
		}
		time.Sleep(2 * time.Second)
	}
}

// checkNotarySecret: Notary's server and signer mount the Secret the
// platform makes for them, a tls secret with the three keys the chart
// reads (ca.crt, tls.crt, tls.key).
func checkNotarySecret(t *testing.T, m *bundlev1.Bundle, rs []rendered) {
	t.Helper()
	const name = "cp-harbor-notary-signer"
	var keys []string
	for _, s := range m.Platform.Secrets {
		if s.Name == name && s.Namespace == "harbor" {
			for _, p := range s.Parts() {
				keys = append(keys, p.Key)
			}
		}
	}
	slices.Sort(keys)
	if strings.Join(keys, ",") != "ca.crt,tls.crt,tls.key" {
		t.Errorf("the platform's secret harbor/%s has the keys %v, want ca.crt, tls.crt and tls.key", name, keys)
	}
	for _, d := range []string{"cp-harbor-notary-server", "cp-harbor-notary-signer"} {
		mounted := false
		for _, r := range rs {
			for _, o := range r.objs {
				if o.Kind() != "Deployment" || o.Name() != d {
					continue
				}
				b, _ := json.Marshal(o)
				mounted = strings.Contains(string(b), `"secretName":"`+name+`"`)
			}
		}
		if !mounted {
			t.Errorf("Deployment %s does not mount Secret %s", d, name)
		}
	}
}
