// Package exec is the one seam through which kpaas and kpaas-agent run host
// commands (kubeadm, systemctl, modprobe, mkfs, …). Code that runs commands
// takes a Runner; production passes Host, tests pass an exectest.Fake that
// records every command and answers from a script, so a phase's commands
// are checked without touching the machine.
//
// A failed command is a *RunError carrying its command line, exit status
// and the tail of its output, so the error a user sees says what ran and
// what it printed.
package exec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	osexec "os/exec"
	"strings"
	"sync"
)

// Cmd is one command to run.
type Cmd struct {
	Name string   // the program, looked up in PATH unless it holds a slash
	Args []string // its arguments
	// Env holds extra KEY=VALUE pairs added to the runner's environment.
	Env []string
	// Stdin is fed to the command's standard input (nil: none).
	Stdin []byte
	// Dir is the working directory ("" : the caller's).
	Dir string
	// Secret marks a command whose standard input or arguments carry a
	// secret: its RunError and String leave the arguments out.
	Secret bool
	// Redact lists secret strings (a token) that String and RunError
	// replace with "<redacted>" wherever they appear, output included.
	Redact []string
	// Progress, when set, receives the command's output (standard output
	// and error) line by line as it runs, each line prefixed with
	// ProgressPrefix and redacted: a long command (kubeadm) shows what it
	// does.
	Progress       io.Writer
	ProgressPrefix string
}

// Command returns a Cmd for name and args.
func Command(name string, args ...string) Cmd { return Cmd{Name: name, Args: args} }

// String is the command line, shell-quoted where needed; the arguments of
// a Secret command are replaced by "…".
func (c Cmd) String() string {
	if c.Secret {
		return c.Name + " …"
	}
	parts := make([]string, 0, len(c.Args)+1)
	for _, s := range append([]string{c.Name}, c.Args...) {
		parts = append(parts, quote(s))
	}
	return c.redact(strings.Join(parts, " "))
}

// redact replaces every Redact string in s.
func (c Cmd) redact(s string) string {
	for _, r := range c.Redact {
		if r != "" {
			s = strings.ReplaceAll(s, r, "<redacted>")
		}
	}
	return s
}

func quote(s string) string {
	if s == "" {
		return "''"
	}
	if strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:=,+@%", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Runner runs commands. Run returns the command's standard output; when
// the command fails (or cannot start) the error is a *RunError.
type Runner interface {
	Run(ctx context.Context, c Cmd) (stdout []byte, err error)
}

// RunError is a command that failed.
type RunError struct {
	Cmd Cmd
	// ExitCode is the exit status, or -1 when the command did not start or
	// was killed by a signal.
	ExitCode int
	// Output is the tail of what the command wrote to stderr (and stdout
	// when stderr was empty), at most 4 KiB.
	Output []byte
	Err    error
}

func (e *RunError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: ", e.Cmd.String())
	if e.ExitCode >= 0 {
		fmt.Fprintf(&b, "exit status %d", e.ExitCode)
	} else {
		b.WriteString(e.Cmd.redact(e.Err.Error()))
	}
	if out := strings.TrimSpace(string(e.Output)); out != "" && !e.Cmd.Secret {
		b.WriteString(": ")
		b.WriteString(e.Cmd.redact(out))
	}
	return b.String()
}

func (e *RunError) Unwrap() error { return e.Err }

// ExitCode returns the exit status of a failed command in err's chain,
// or -1 when err holds none.
func ExitCode(err error) int {
	var re *RunError
	if errors.As(err, &re) {
		return re.ExitCode
	}
	return -1
}

// maxOutput bounds the output a RunError keeps.
const maxOutput = 4 << 10

// Host runs commands on this machine.
type Host struct {
	// Stderr, when set, also receives each command's standard error as it
	// is written (for commands whose progress the user should see).
	Stderr io.Writer
}

// Run runs c and waits for it. Cancelling ctx kills the command.
func (h Host) Run(ctx context.Context, c Cmd) ([]byte, error) {
	cmd := osexec.CommandContext(ctx, c.Name, c.Args...)
	cmd.Dir = c.Dir
	if len(c.Env) > 0 {
		cmd.Env = append(cmd.Environ(), c.Env...)
	}
	if c.Stdin != nil {
		cmd.Stdin = bytes.NewReader(c.Stdin)
	}
	var stdout bytes.Buffer
	stderr := &tail{max: maxOutput}
	cmd.Stdout = &stdout
	cmd.Stderr = stderr
	if h.Stderr != nil {
		cmd.Stderr = io.MultiWriter(stderr, h.Stderr)
	}
	var lws []*lineWriter
	if c.Progress != nil {
		// One line buffer per stream (os/exec copies them concurrently),
		// one lock for the lines they emit.
		mu := &sync.Mutex{}
		out := &lineWriter{w: c.Progress, prefix: c.ProgressPrefix, cmd: c, mu: mu}
		errw := &lineWriter{w: c.Progress, prefix: c.ProgressPrefix, cmd: c, mu: mu}
		lws = []*lineWriter{out, errw}
		cmd.Stdout = io.MultiWriter(cmd.Stdout, out)
		cmd.Stderr = io.MultiWriter(cmd.Stderr, errw)
	}
	err := cmd.Run()
	for _, lw := range lws {
		lw.flush()
	}
	if err == nil {
		return stdout.Bytes(), nil
	}
	re := &RunError{Cmd: c, ExitCode: -1, Output: stderr.bytes(), Err: err}
	var ee *osexec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() >= 0 {
		re.ExitCode = ee.ExitCode()
	}
	if len(re.Output) == 0 {
		out := stdout.Bytes()
		if len(out) > maxOutput {
			out = out[len(out)-maxOutput:]
		}
		re.Output = out
	}
	if ctx.Err() != nil {
		re.Err = errors.Join(err, ctx.Err())
	}
	return stdout.Bytes(), re
}

// tail keeps the last max bytes written to it.
type tail struct {
	max int
	buf []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if len(t.buf) > 2*t.max {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.max:]...)
	}
	return len(p), nil
}

func (t *tail) bytes() []byte {
	if len(t.buf) > t.max {
		return t.buf[len(t.buf)-t.max:]
	}
	return t.buf
}

// lineWriter copies whole lines of one stream to w, prefixed and
// redacted; mu serialises the lines of a command's two streams.
type lineWriter struct {
	w      io.Writer
	prefix string
	cmd    Cmd
	mu     *sync.Mutex
	buf    []byte
}

func (l *lineWriter) Write(p []byte) (int, error) {
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		l.emit(l.buf[:i])
		l.buf = l.buf[i+1:]
	}
	if len(l.buf) > 64<<10 { // a runaway line: show it anyway
		l.flush()
	}
	return len(p), nil
}

func (l *lineWriter) emit(line []byte) {
	if len(bytes.TrimSpace(line)) == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, "%s%s\n", l.prefix, l.cmd.redact(string(bytes.TrimRight(line, "\r"))))
}

func (l *lineWriter) flush() {
	if len(l.buf) > 0 {
		l.emit(l.buf)
		l.buf = nil
	}
}
