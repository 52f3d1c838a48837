// Package journal is kpaas-agent's record of its phases on the state
// partition (/var/lib/kpaas/journal.json): for every phase the last thing
// that happened to it, and a bounded history across boots. It is written
// atomically after every transition, so a power cut leaves the previous
// version; a file that still cannot be read (a torn or foreign file) is
// reported and replaced by an empty journal — the phases' checks, not the
// journal, decide what is done, so nothing is trusted blindly.
package journal

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"kpaas.dev/appliance/internal/atomicfile"
	"kpaas.dev/appliance/internal/steps"
)

// Version is the journal format's version.
const Version = 1

// maxHistory bounds the history kept.
const maxHistory = 200

// Phase is the last state of one phase.
type Phase struct {
	Name    string      `json:"name"`
	State   steps.State `json:"state"`
	Started time.Time   `json:"started"`
	// Seconds is how long the phase took (for done, already-done and
	// failed).
	Seconds float64 `json:"seconds"`
	Boot    int     `json:"boot"` // the agent run it happened in
	Error   string  `json:"error,omitempty"`
}

// Journal is the agent's record.
type Journal struct {
	Version int    `json:"version"`
	Node    string `json:"node,omitempty"`
	Role    string `json:"role,omitempty"`
	// Runs counts the agent's runs (one per boot, normally).
	Runs int `json:"runs"`
	// RunStarted is when the current run began; BootTime when the machine
	// was powered on (for "time since power-on").
	RunStarted time.Time `json:"runStarted"`
	BootTime   time.Time `json:"bootTime,omitzero"`
	Phases     []Phase   `json:"phases"`
	History    []Phase   `json:"history,omitempty"`
	// Finished is set when every phase is done in this run.
	Finished time.Time `json:"finished,omitzero"`

	path string
	// Torn says the file existed but could not be read; it was replaced.
	Torn error `json:"-"`
}

// Open reads the journal at path. A missing file gives an empty journal;
// an unreadable one an empty journal with Torn set.
func Open(path string) *Journal {
	j := &Journal{Version: Version, path: path}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return j
	}
	if err == nil {
		var got Journal
		if err = json.Unmarshal(b, &got); err == nil && got.Version != Version {
			err = fmt.Errorf("format version %d, want %d", got.Version, Version)
		}
		if err == nil {
			got.path = path
			return &got
		}
	}
	j.Torn = fmt.Errorf("journal %s unreadable, starting a new one from the phases' checks: %w", path, err)
	return j
}

// Path is where the journal lives.
func (j *Journal) Path() string { return j.path }

// BeginRun starts a new agent run.
func (j *Journal) BeginRun(now time.Time) error {
	j.Runs++
	j.RunStarted = now
	j.Finished = time.Time{}
	return j.Save()
}

// Record notes a step transition and saves the journal.
func (j *Journal) Record(ev steps.Event) error {
	p := Phase{Name: ev.Step, State: ev.State, Started: ev.Start, Seconds: ev.Duration.Seconds(), Boot: j.Runs}
	if ev.Err != nil {
		p.Error = ev.Err.Error()
	}
	found := false
	for i := range j.Phases {
		if j.Phases[i].Name == p.Name {
			j.Phases[i] = p
			found = true
		}
	}
	if !found {
		j.Phases = append(j.Phases, p)
	}
	if ev.State != steps.Running {
		j.History = append(j.History, p)
		if n := len(j.History); n > maxHistory {
			j.History = append([]Phase(nil), j.History[n-maxHistory:]...)
		}
	}
	return j.Save()
}

// Phase returns the last record of a phase.
func (j *Journal) Phase(name string) (Phase, bool) {
	for _, p := range j.Phases {
		if p.Name == name {
			return p, true
		}
	}
	return Phase{}, false
}

// Save writes the journal atomically (0600: it may name the node's
// failures, never secrets, but it is nobody else's business).
func (j *Journal) Save() error {
	if j.path == "" {
		return nil
	}
	b, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(j.path, append(b, '\n'), 0o600)
}
