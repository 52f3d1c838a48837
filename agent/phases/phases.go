// Package phases is what kpaas-agent does on a node, as a literal list of
// phases built in one function (List), each in its own file. A phase has
// a Check (does its postcondition already hold on this host?) and a Run
// (make it hold); internal/steps runs them, checking first, so a node that
// lost power anywhere resumes where the host says it stands, never where a
// journal says it might.
//
// Every phase touches the machine only through Env.Host (files under a
// root folder, commands through the exec seam), so tests run each phase
// against a temp folder and a fake runner.
package phases

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"kpaas.dev/appliance/agent/host"
	"kpaas.dev/appliance/agent/journal"
	cluster "kpaas.dev/appliance/api/cluster/v1alpha1"
	"kpaas.dev/appliance/internal/bundle"
	"kpaas.dev/appliance/internal/progress"
	"kpaas.dev/appliance/internal/retry"
	"kpaas.dev/appliance/internal/steps"
)

// Env is everything a phase may use. It is built once per agent run.
type Env struct {
	Host *host.Host
	// Bundle is the media's bundle (read-only) and its lock.
	Bundle *bundle.Store
	Lock   *bundle.Lock
	// PublicKey verifies the bundle's signature; nil when the media were
	// built without one.
	PublicKey ed25519.PublicKey
	Cluster   *cluster.Cluster
	Node      *cluster.Node
	// NIC is the interface the node's address goes on.
	NIC string
	// SecretsDir is the machine path of the config disk's secrets folder.
	SecretsDir string
	// AgentBinary is the agent's own path on the machine (for units).
	AgentBinary string
	Progress    *progress.Reporter
	// Probe checks that an http URL on the node answers 200 (the seed's
	// health). Tests replace it.
	Probe func(ctx context.Context, url string) error
	// Dial checks that a TCP address accepts connections (the API
	// endpoint). Tests replace it.
	Dial func(ctx context.Context, addr string) error
	// Now is the clock.
	Now func() time.Time
	// MaxRSS replaces the agent's own peak memory reading (KiB) in tests.
	MaxRSS func() int64
	// rssAfter is the agent's peak memory (KiB) after each phase that ran
	// in this process: where the peak comes from.
	rssMu    sync.Mutex
	rssAfter map[string]int64
	// Journal is the agent's journal (the ready phase publishes it).
	Journal *journal.Journal
	// Wait scales the phases' waiting policies (1 on nodes; tests shrink
	// it to run fast). Zero means 1.
	Wait float64
}

// Phase is one step of the agent.
type Phase struct {
	Name string
	// Plan says what Run would do on this node, without doing it.
	Plan  func(e *Env) []string
	Check func(ctx context.Context, e *Env) (bool, error)
	Run   func(ctx context.Context, e *Env) error
	Retry retry.Policy
}

// List is the agent's phases on this node, in order.
func List() []Phase {
	return []Phase{
		preflight(),
		hostSetup(),
		runtime(),
		seed(),
		kubeadm(),
		network(),
		platformPhase(),
		harborPhase(),
		ready(),
	}
}

// Steps binds phases to an Env for the step runner.
func Steps(e *Env, list []Phase) []steps.Step {
	out := make([]steps.Step, 0, len(list))
	for _, p := range list {
		s := steps.Step{Name: p.Name, Retry: e.scale(p.Retry)}
		if p.Check != nil {
			s.Check = func(ctx context.Context) (bool, error) { return p.Check(ctx, e) }
		}
		s.Run = func(ctx context.Context) error {
			err := p.Run(ctx, e)
			e.notePeak(p.Name)
			return err
		}
		out = append(out, s)
	}
	return out
}

// maxRSS is the agent's peak memory so far, in KiB.
func (e *Env) maxRSS() int64 {
	if e.MaxRSS != nil {
		return e.MaxRSS()
	}
	return maxRSSKiB()
}

func (e *Env) notePeak(phase string) {
	e.rssMu.Lock()
	defer e.rssMu.Unlock()
	if e.rssAfter == nil {
		e.rssAfter = map[string]int64{}
	}
	e.rssAfter[phase] = e.maxRSS()
}

func (e *Env) peakAfter(phase string) int64 {
	e.rssMu.Lock()
	defer e.rssMu.Unlock()
	return e.rssAfter[phase]
}

// IsFirstControlPlane reports whether this node runs kubeadm init.
func (e *Env) IsFirstControlPlane() bool {
	fcp := e.Cluster.FirstControlPlane()
	return fcp != nil && fcp.Name == e.Node.Name
}

// IsControlPlane reports whether this node is a control plane.
func (e *Env) IsControlPlane() bool { return e.Node.Role == cluster.RoleControlPlane }

func (e *Env) now() time.Time {
	if e.Now != nil {
		return e.Now()
	}
	return time.Now()
}

func (e *Env) scale(p retry.Policy) retry.Policy {
	if e.Wait > 0 && e.Wait != 1 {
		p.Base = time.Duration(float64(p.Base) * e.Wait)
		p.Max = time.Duration(float64(p.Max) * e.Wait)
	}
	return p
}

// sleep waits d (scaled) or until ctx ends.
func (e *Env) sleep(ctx context.Context, d time.Duration) error {
	if e.Wait > 0 {
		d = time.Duration(float64(d) * e.Wait)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// HTTPProbe is the production Probe: a GET with a short timeout.
func HTTPProbe(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// TCPDial is the production Dial.
func TCPDial(ctx context.Context, addr string) error {
	d := net.Dialer{Timeout: 5 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return c.Close()
}

// file is one file a phase keeps on the machine.
type file struct {
	path string
	mode os.FileMode
	data []byte
}

// writeFiles writes fs and reports whether any changed.
func (e *Env) writeFiles(fs []file) (bool, error) {
	changed := false
	for _, f := range fs {
		c, err := e.Host.WriteFile(f.path, f.data, f.mode)
		if err != nil {
			return changed, err
		}
		changed = changed || c
	}
	return changed, nil
}

// filesInPlace reports whether every file holds its content and mode.
func (e *Env) filesInPlace(fs []file) bool {
	for _, f := range fs {
		if !e.Host.Same(f.path, f.data, f.mode) {
			return false
		}
	}
	return true
}

func filePlan(fs []file) []string {
	var out []string
	for _, f := range fs {
		out = append(out, fmt.Sprintf("write %s (%04o)", f.path, f.mode))
	}
	return out
}
