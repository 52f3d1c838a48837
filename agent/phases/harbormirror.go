package phases

import (
	"context"
	"fmt"
	"strings"
	"time"

	"kpaas.dev/appliance/internal/bundle"
	"kpaas.dev/appliance/internal/names"
	"kpaas.dev/appliance/internal/push"
	"kpaas.dev/appliance/internal/retry"
)

// A node's containerd asks the cluster's Harbor first only once Harbor
// holds every image of the bundle: until then its hosts.toml names the
// node's seed alone. Asking a Harbor that is not there yet costs every
// pull a timeout (its NodePort answers nothing while Harbor's pods start,
// or while the node's service rules are not in place), and on a slow
// machine that made the platform's own pulls, Harbor's among them, wait
// minutes each.
//
// The switch rewrites the hosts.toml files only: containerd reads them at
// every pull, so running pods and containerd itself are not disturbed.
// The marker holds the Harbor the node switched to; the runtime phase
// writes the same files from it after a reboot.
const harborMirrorMarker = names.StateDir + "/harbor-mirror"

// The timer that switches a node whose agent finished before Harbor held
// the bundle: `kpaas-agent harbor-mirror` every two minutes until done.
const (
	HarborMirrorTimerName = "kpaas-agent-harbor.timer"
	harborMirrorService   = "/etc/systemd/system/kpaas-agent-harbor.service"
	harborMirrorTimer     = "/etc/systemd/system/" + HarborMirrorTimerName
)

// harborMirrored is the Harbor this node's containerd asks first, or ""
// while it asks only its seed (or the site has no Harbor, or the marker
// names another Harbor than the cluster's).
func harborMirrored(e *Env) string {
	if h := harborRegistry(e); h != "" && switchedTo(e) == h {
		return h
	}
	return ""
}

// switchedTo is the Harbor URL the marker records ("" without a marker).
func switchedTo(e *Env) string {
	b, _ := e.Host.ReadFile(harborMirrorMarker)
	return strings.TrimSpace(string(b))
}

// HarborMirrorResult says where a node's pulls go after SwitchToHarbor.
type HarborMirrorResult struct {
	// Harbor is the cluster's Harbor ("" when the site has none).
	Harbor string `json:"harbor,omitempty"`
	// Switched is true when containerd asks Harbor first.
	Switched bool `json:"switched"`
	// Reason says why not yet (Harbor does not answer, lacks images).
	Reason string `json:"reason,omitempty"`
	// Images is how many of the bundle's images Harbor was asked for.
	Images int `json:"images,omitempty"`
}

// SwitchToHarbor makes the node's containerd ask the cluster's Harbor
// first, then its seed, once Harbor holds every image of the bundle,
// asked without credentials the way containerd asks (each image by its
// digest in its project). It is a no-op on a node that switched already
// and on a site without Harbor. When it switches, it stops the timer.
func SwitchToHarbor(ctx context.Context, e *Env) (HarborMirrorResult, error) {
	h, err := harborEndpoint(e)
	if err != nil || h == "" {
		return HarborMirrorResult{}, err
	}
	res := HarborMirrorResult{Harbor: h}
	hs, err := hostsFiles(e, h)
	if err != nil {
		return res, err
	}
	if switchedTo(e) == h && e.filesInPlace(hs) {
		res.Switched = true
		return res, nil
	}
	o := push.Options{
		Registry: h, Insecure: strings.HasPrefix(h, "http://"),
		Kinds:          []bundle.Kind{bundle.KindImage},
		RequestTimeout: 30 * time.Second,
		Retry:          e.scale(retry.Policy{Attempts: 3, Base: 2 * time.Second}),
	}
	res.Images = countOf(e.Lock, bundle.KindImage)
	missing, err := push.Missing(ctx, e.Bundle, o)
	switch {
	case err != nil:
		res.Reason = fmt.Sprintf("Harbor at %s: %v", h, err)
		return res, nil
	case len(missing) > 0:
		res.Reason = fmt.Sprintf("Harbor at %s lacks %d of the bundle's %d images (%s)", h, len(missing), res.Images, firstOf(missing, 3))
		return res, nil
	}
	if _, err := e.writeFiles(hs); err != nil {
		return res, err
	}
	if _, err := e.Host.WriteFile(harborMirrorMarker, []byte(h+"\n"), 0o644); err != nil {
		return res, err
	}
	res.Switched = true
	e.Progress.Printf("harbor: containerd on %s asks Harbor at %s first now, then the node's seed (Harbor holds all %d images of the bundle)", e.Node.Name, h, res.Images)
	if e.Host.Exists(harborMirrorTimer) {
		if _, err := e.Host.Run(ctx, "systemctl", "disable", "--now", HarborMirrorTimerName); err != nil {
			return res, fmt.Errorf("stopping %s: %w", HarborMirrorTimerName, err)
		}
	}
	return res, nil
}

// firstOf joins up to n of refs, saying how many more there are.
func firstOf(refs []string, n int) string {
	if len(refs) <= n {
		return strings.Join(refs, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(refs[:n], ", "), len(refs)-n)
}

// harborMirrorFiles are the timer and its service.
func harborMirrorFiles(e *Env) []file {
	service := fmt.Sprintf(`# Written by kpaas-agent: containerd asks the cluster's Harbor first once
# Harbor holds every image of the bundle; started by %[1]s, which it
# stops when done.
[Unit]
Description=K-PaaS: pull from the cluster's Harbor once it holds the bundle
After=kpaas-agent.service
ConditionPathIsDirectory=%[2]s

[Service]
Type=oneshot
ExecStart=%[3]s harbor-mirror
StandardOutput=journal+console
StandardError=journal+console
`, HarborMirrorTimerName, names.BundleDir, e.AgentBinary)
	timer := `# Written by kpaas-agent: asks every two minutes until Harbor holds the
# bundle (kpaas-agent-harbor.service).
[Unit]
Description=K-PaaS: pull from the cluster's Harbor once it holds the bundle

[Timer]
OnActiveSec=1min
OnUnitInactiveSec=2min

[Install]
WantedBy=timers.target
`
	return []file{{harborMirrorService, 0o644, []byte(service)}, {harborMirrorTimer, 0o644, []byte(timer)}}
}

// harborMirrorTimerOn reports whether the timer is written and enabled.
func harborMirrorTimerOn(ctx context.Context, e *Env) bool {
	if !e.filesInPlace(harborMirrorFiles(e)) {
		return false
	}
	_, err := e.Host.Run(ctx, "systemctl", "is-enabled", "--quiet", HarborMirrorTimerName)
	return err == nil
}

// startHarborMirrorTimer writes and starts the timer.
func startHarborMirrorTimer(ctx context.Context, e *Env) error {
	if _, err := e.writeFiles(harborMirrorFiles(e)); err != nil {
		return err
	}
	for _, c := range [][]string{{"systemctl", "daemon-reload"}, {"systemctl", "enable", "--now", HarborMirrorTimerName}} {
		if _, err := e.Host.Run(ctx, c[0], c[1:]...); err != nil {
			return err
		}
	}
	return nil
}

// switchOrWait switches the node to Harbor when Harbor holds the bundle,
// and otherwise leaves it to the timer.
func switchOrWait(ctx context.Context, e *Env) error {
	res, err := SwitchToHarbor(ctx, e)
	if err != nil || res.Switched || res.Harbor == "" {
		return err
	}
	e.Progress.Printf("harbor: containerd on %s keeps pulling from the node's seed for now: %s; %s asks again every 2 minutes", e.Node.Name, res.Reason, HarborMirrorTimerName)
	return startHarborMirrorTimer(ctx, e)
}
