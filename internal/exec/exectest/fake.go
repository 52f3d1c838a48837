// Package exectest is the test double of the exec seam: a Runner that runs
// nothing, records every command, and answers from a script of rules.
package exectest

import (
	"context"
	"strings"
	"sync"

	"kpaas.dev/appliance/internal/exec"
)

// Response is what a rule answers: standard output, and an exit status
// (non-zero gives a *exec.RunError carrying Stderr).
type Response struct {
	Stdout   string
	Stderr   string
	ExitCode int
}

// Fake is a Runner for tests. Commands that match no rule succeed with no
// output. It is safe for concurrent use.
type Fake struct {
	mu    sync.Mutex
	calls []exec.Cmd
	rules []rule
}

type rule struct {
	prefix string
	fn     func(exec.Cmd) Response
}

// On answers commands whose command line (Cmd.String of the unredacted
// command) starts with prefix. Later rules win over earlier ones, so a test
// can override a default.
func (f *Fake) On(prefix string, fn func(c exec.Cmd) Response) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = append(f.rules, rule{prefix, fn})
}

// Reply answers commands starting with prefix with r.
func (f *Fake) Reply(prefix string, r Response) {
	f.On(prefix, func(exec.Cmd) Response { return r })
}

// Run records c and answers it.
func (f *Fake) Run(ctx context.Context, c exec.Cmd) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.calls = append(f.calls, c)
	var fn func(exec.Cmd) Response
	line := commandLine(c)
	for i := len(f.rules) - 1; i >= 0; i-- {
		if strings.HasPrefix(line, f.rules[i].prefix) {
			fn = f.rules[i].fn
			break
		}
	}
	f.mu.Unlock()
	if fn == nil {
		return nil, nil
	}
	r := fn(c)
	if r.ExitCode != 0 {
		return []byte(r.Stdout), &exec.RunError{Cmd: c, ExitCode: r.ExitCode, Output: []byte(r.Stderr), Err: errExit}
	}
	return []byte(r.Stdout), nil
}

type exitError struct{}

func (exitError) Error() string { return "exit status" }

var errExit = exitError{}

// Calls returns the commands run so far.
func (f *Fake) Calls() []exec.Cmd {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]exec.Cmd(nil), f.calls...)
}

// Lines returns the command lines run so far, one per command, with the
// arguments of Secret commands redacted (as a log would show them).
func (f *Fake) Lines() []string {
	var out []string
	for _, c := range f.Calls() {
		out = append(out, c.String())
	}
	return out
}

// Reset forgets the recorded commands (the rules stay).
func (f *Fake) Reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = nil
}

func commandLine(c exec.Cmd) string {
	c.Secret = false
	return c.String()
}
