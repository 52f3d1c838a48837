package phases

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	bundlev1 "kpaas.dev/appliance/api/bundle/v1alpha1"
	"kpaas.dev/appliance/internal/bundle"
	"kpaas.dev/appliance/internal/harbor"
	"kpaas.dev/appliance/internal/platform"
	"kpaas.dev/appliance/internal/progress"
	"kpaas.dev/appliance/internal/push"
	"kpaas.dev/appliance/internal/retry"
)

// HarborRecord is the ConfigMap (in StatusNamespace) where the first
// control plane records the push of the bundle into Harbor: state, the
// bundle it pushed (the sha256 of its lock), Harbor's URL, what was sent
// and how long it took, or the last error.
const HarborRecord = "kpaas-harbor"

// Harbor push states.
const (
	HarborPushing = "pushing"
	HarborPushed  = "pushed"
	HarborFailed  = "failed"
)

// harborUser is the account the agent pushes with: Harbor's system
// administrator, whose password the platform secret holds.
const harborUser = "admin"

// harborPhase pushes every image and chart of the bundle into the
// platform's Harbor (the release marked harbor) once the platform phase
// has passed its gate, on the first control plane: a public project per
// source registry, so that containerd on every node can pull without
// credentials. The push skips what Harbor already has, so an interrupted
// push resumes; the record in the cluster says which bundle was pushed.
// Then, on every node, containerd asks Harbor first once Harbor holds
// the bundle (SwitchToHarbor): at once where it does, otherwise by a
// timer that asks again every two minutes (a worker's agent is done long
// before the first control plane has installed Harbor). Nodes without a
// Harbor release, or whose site disables it, skip it.
func harborPhase() Phase {
	return Phase{
		Name: "harbor",
		Plan: func(e *Env) []string {
			r, ok := harborRelease(e)
			if !ok {
				return []string{"nothing: the platform has no Harbor release (or this site disables it)"}
			}
			var out []string
			if e.IsFirstControlPlane() {
				n := countOf(e.Lock, bundle.KindImage, bundle.KindChart)
				out = append(out, fmt.Sprintf("push the bundle's %d images and charts into Harbor (release %s) at %s as %s, a public project per source registry; skip what Harbor has",
					n, r.Name, r.URL, harborUser))
			}
			return append(out, fmt.Sprintf("once Harbor holds the bundle's %d images (asked without credentials, by digest), containerd asks Harbor first, then the node's seed: rewrite %s/*/hosts.toml and write %s; until then %s asks every 2 minutes",
				countOf(e.Lock, bundle.KindImage), containerdHosts, harborMirrorMarker, HarborMirrorTimerName))
		},
		Check: func(ctx context.Context, e *Env) (bool, error) {
			if _, ok := harborRelease(e); !ok {
				return true, nil
			}
			mirrored := harborMirrored(e) != "" || harborMirrorTimerOn(ctx, e)
			if !e.IsFirstControlPlane() {
				return mirrored, nil
			}
			rec, err := harborRecord(ctx, e)
			if err != nil {
				return false, nil // the API may not answer yet: Run finds out
			}
			return rec["state"] == HarborPushed && rec["bundle"] == bundleDigest(e) && mirrored, nil
		},
		Run: func(ctx context.Context, e *Env) error {
			if e.IsFirstControlPlane() {
				if rec, err := harborRecord(ctx, e); err != nil || rec["state"] != HarborPushed || rec["bundle"] != bundleDigest(e) {
					if err := pushIntoHarbor(ctx, e); err != nil {
						return err
					}
				}
			}
			return switchOrWait(ctx, e)
		},
		Retry: retry.Policy{Attempts: 5, Base: 15 * time.Second, Max: 2 * time.Minute},
	}
}

// harborRelease is the site's Harbor release (not disabled), if any.
func harborRelease(e *Env) (bundle.LockRelease, bool) {
	p, err := sitePlatform(e)
	if err != nil || p == nil {
		return bundle.LockRelease{}, false
	}
	for _, r := range p.Releases {
		if r.Harbor {
			return r, true
		}
	}
	return bundle.LockRelease{}, false
}

// harborRegistry is where this node reaches the site's Harbor
// (scheme://host:port of the Harbor release's URL, facts put in), or ""
// when the site has no Harbor. Every node computes it from the bundle and
// the cluster configuration alone: workers hold neither the platform's
// secrets nor rights to read the cluster's records.
func harborRegistry(e *Env) string {
	u, _ := harborEndpoint(e)
	return u
}

// harborEndpoint is harborRegistry with the reason when the site has a
// Harbor release whose URL does not resolve to one.
func harborEndpoint(e *Env) (string, error) {
	r, ok := harborRelease(e)
	if !ok || e.Cluster == nil {
		return "", nil
	}
	lookup := platform.Lookup(platform.Facts(e.Cluster, e.Lock.Platform.Facts), nil)
	target, missing := expandURL(r.URL, lookup)
	if len(missing) > 0 || target == "" {
		return "", fmt.Errorf("release %s: url %q names %s, which this site does not have", r.Name, r.URL, strings.Join(missing, ", "))
	}
	u, err := url.Parse(target)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return "", fmt.Errorf("release %s: url %q is not an http(s) URL", r.Name, target)
	}
	return u.Scheme + "://" + u.Host, nil
}

// countOf is the number of the lock's artifacts of the kinds (a push
// sends images and charts; containerd pulls images).
func countOf(l *bundle.Lock, kinds ...bundle.Kind) int {
	n := 0
	for _, a := range l.Artifacts {
		if slices.Contains(kinds, a.Kind) {
			n++
		}
	}
	return n
}

// bundleDigest identifies the bundle: the sha256 of its lock.
func bundleDigest(e *Env) string {
	b, err := e.Bundle.ReadFile(bundle.LockFile)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func pushIntoHarbor(ctx context.Context, e *Env) error {
	in, err := newInstaller(e)
	if err != nil {
		return err
	}
	r, ok := harborRelease(e)
	if !ok {
		return nil
	}
	registry, err := harborEndpoint(e)
	if err != nil {
		return err
	}
	secret := bundlev1.HarborAdminSecret(r.Values)
	password := in.secrets[secret]
	if password == "" {
		return fmt.Errorf("release %s: no admin password: values.harborAdminPassword names secret %q, which the config disk lacks", r.Name, secret)
	}
	start := e.now()
	health := harborHealth(ctx, registry)
	total := countOf(e.Lock, bundle.KindImage, bundle.KindChart)
	e.Progress.Printf("harbor: Harbor at %s says %s; pushing the bundle's %d images and charts into it (release %s)", registry, health, total, r.Name)
	// While it pushes, the record says how many artifacts have ended
	// (every harborProgressEvery, when that changed).
	var ended, failed atomic.Int64
	endedOf := func() string { return fmt.Sprintf("%d/%d", ended.Load(), total) }
	in.harborRecord(ctx, map[string]string{"state": HarborPushing, "url": registry, "health": health, "ended": endedOf()})
	last := int64(0)
	stop := progress.Every(harborProgressEvery, func(time.Duration) {
		if n := ended.Load(); n != last {
			last = n
			in.harborRecord(ctx, map[string]string{"state": HarborPushing, "url": registry, "health": health,
				"ended": endedOf(), "failed": fmt.Sprint(failed.Load()), "seconds": fmt.Sprintf("%.1f", e.now().Sub(start).Seconds())})
		}
	})
	sum, err := push.Push(ctx, e.Bundle, push.Options{
		Registry: registry, Insecure: strings.HasPrefix(registry, "http://"),
		Username: harborUser, Password: password,
		Harbor: true, PublicProjects: true,
		Jobs: harborPushJobs, RequestTimeout: harborRequestTimeout, Retry: harborRequestRetry,
		Progress: e.Progress.Writer(),
		Finished: func(r push.ArtifactResult, _, _ int) {
			ended.Add(1)
			if r.Error != "" {
				failed.Add(1)
			}
		},
	})
	stop() // no progress record after the final one
	secs := fmt.Sprintf("%.1f", e.now().Sub(start).Seconds())
	if err != nil {
		msg := redact(err.Error(), []string{password})
		in.harborRecord(ctx, map[string]string{"state": HarborFailed, "url": registry, "health": health, "seconds": secs,
			"ended": endedOf(), "failed": fmt.Sprint(sum.Failed), "error": msg})
		// Harbor may still be settling (core restarting, the registry not
		// ready): the step runner tries again.
		return retry.Retryable(fmt.Errorf("pushing into Harbor at %s: %s", registry, msg))
	}
	e.Progress.Printf("harbor: %d images and %d charts in Harbor (%d blobs sent, %d mounted, %d already there; %.1f MB sent) in %s",
		sum.Images, sum.Charts, sum.BlobsSent, sum.BlobsMounted, sum.BlobsSkipped, float64(sum.BytesSent)/1e6, sum.Duration.Round(100*time.Millisecond))
	rec := map[string]string{
		"state": HarborPushed, "url": registry, "bundle": bundleDigest(e), "seconds": secs, "health": health, "ended": endedOf(),
		"images": fmt.Sprint(sum.Images), "charts": fmt.Sprint(sum.Charts),
		"blobsSent": fmt.Sprint(sum.BlobsSent), "bytesSent": fmt.Sprint(sum.BytesSent),
		"projects": strings.Join(sum.Projects, ","),
	}
	if err := in.harborRecord(ctx, rec); err != nil {
		return retry.Retryable(fmt.Errorf("recording the push: %w", err))
	}
	return nil
}

// The push into a Harbor the cluster has only just started is patient:
// Harbor's core, registry and nginx share their nodes with the rest of the
// platform's start, and one slow answer should not end a push that the
// step runner then starts from the beginning (every artifact asked again).
// A request may take 3 minutes and is tried 6 times, the waits between
// the tries adding up to 2 minutes; two uploads at a time, so that a busy
// Harbor answers each sooner rather than four more slowly. `kpaas push`
// keeps push's defaults.
const (
	harborPushJobs       = 2
	harborRequestTimeout = 3 * time.Minute
)

var harborRequestRetry = retry.Policy{Attempts: 6, Base: 5 * time.Second, Max: 45 * time.Second}

// harborProgressEvery is how often the record of a running push is
// brought up to date.
const harborProgressEvery = 30 * time.Second

// harborHealth is Harbor's own word on its health (GET /health), for the
// record and the console: "healthy", "unhealthy (core: ERROR, …)", or why
// it could not be asked. The push itself decides whether Harbor serves.
// Asked without credentials, as Harbor allows: with them, Harbor would
// first check the password, which costs it seconds on a slow node (see
// push's robot accounts).
func harborHealth(ctx context.Context, registry string) string {
	hc, err := harbor.New(registry,
		harbor.WithTimeout(20*time.Second), harbor.WithRetry(retry.Policy{Attempts: 2, Base: 2 * time.Second}))
	if err != nil {
		return "unknown: " + err.Error()
	}
	h, err := hc.Health(ctx)
	if err != nil {
		return "unknown: " + err.Error()
	}
	if h.Healthy() {
		return h.Status
	}
	var bad []string
	for _, c := range h.Components {
		if c.Status != "healthy" {
			bad = append(bad, c.Name+": "+c.Status)
		}
	}
	return fmt.Sprintf("%s (%s)", h.Status, strings.Join(bad, ", "))
}

// harborRecord writes the push record (ConfigMap HarborRecord).
func (in *installer) harborRecord(ctx context.Context, data map[string]string) error {
	data["updated"] = in.e.now().UTC().Format(time.RFC3339)
	d := map[string]any{}
	for k, v := range data {
		d[k] = v
	}
	cm := platform.Object{
		"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": HarborRecord, "namespace": StatusNamespace},
		"data":     d,
	}
	b, err := platform.Stream([]platform.Object{namespaceObject(StatusNamespace), cm})
	if err != nil {
		return err
	}
	_, err = in.kubectlIn(ctx, b, false, applyArgs("-")...)
	return err
}

// harborRecord reads the push record.
func harborRecord(ctx context.Context, e *Env) (map[string]string, error) {
	out, err := e.Host.Run(ctx, "kubectl", "--kubeconfig", adminConf, "-n", StatusNamespace, "get", "configmap", HarborRecord, "-o", "json")
	if err != nil {
		return nil, err
	}
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := json.Unmarshal(out, &cm); err != nil {
		return nil, fmt.Errorf("reading %s: %w", HarborRecord, err)
	}
	return cm.Data, nil
}

// HarborStatus is the push record, as `kpaas-agent status` shows it
// (nil when the platform has no Harbor, or nothing was recorded yet).
func HarborStatus(ctx context.Context, e *Env) map[string]string {
	if _, ok := harborRelease(e); !ok {
		return nil
	}
	rec, err := harborRecord(ctx, e)
	if err != nil {
		return nil
	}
	return rec
}
