// Package progress is the one progress stream of kpaas, kpaas-init and
// kpaas-agent: internal/steps prints its `phase NAME (n/m): done in 1.2s`
// lines through a Reporter (quiet keeps the failures), long transfers show
// a bar that redraws in place on a terminal and plain lines, at most every
// few seconds, in logs and CI.
package progress

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"
)

// Reporter writes progress to one stream. It is safe for concurrent use.
type Reporter struct {
	mu     sync.Mutex
	w      io.Writer
	tty    bool
	quiet  bool
	prefix string
	now    func() time.Time
}

// Option configures a Reporter.
type Option func(*Reporter)

// Quiet suppresses everything but failures.
func Quiet(q bool) Option { return func(r *Reporter) { r.quiet = q } }

// Terminal forces (or disables) terminal mode; by default it is on when w
// is a terminal.
func Terminal(on bool) Option { return func(r *Reporter) { r.tty = on } }

// Prefix starts every line of Printf and Errorf with p (kpaas-init marks
// its console lines "kpaas-init: ").
func Prefix(p string) Option { return func(r *Reporter) { r.prefix = p } }

// New returns a Reporter writing to w.
func New(w io.Writer, opts ...Option) *Reporter {
	r := &Reporter{w: w, now: time.Now}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		r.tty = true
	}
	for _, o := range opts {
		o(r)
	}
	return r
}

// Discard is a Reporter that prints nothing.
func Discard() *Reporter { return New(io.Discard, Quiet(true)) }

// Printf prints one plain line.
func (r *Reporter) Printf(format string, args ...any) {
	if r == nil || r.quiet {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	io.WriteString(r.w, r.prefix+fmt.Sprintf(format, args...)+"\n")
}

// Writer returns a writer whose writes go to the stream as they are
// (whole lines, e.g. a long command's output), unless quiet.
func (r *Reporter) Writer() io.Writer { return reporterWriter{r} }

type reporterWriter struct{ r *Reporter }

func (w reporterWriter) Write(p []byte) (int, error) {
	if w.r == nil || w.r.quiet {
		return len(p), nil
	}
	w.r.mu.Lock()
	defer w.r.mu.Unlock()
	return w.r.w.Write(p)
}

// Errorf prints one plain line even when quiet: failures are never
// suppressed.
func (r *Reporter) Errorf(format string, args ...any) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	io.WriteString(r.w, r.prefix+fmt.Sprintf(format, args...)+"\n")
}

// Bar tracks a transfer of a known total.
type Bar struct {
	r         *Reporter
	label     string
	total     int64
	mu        sync.Mutex
	done      int64
	lastPrint time.Time
	lastPct   int
}

// Bar starts a progress bar for total bytes.
func (r *Reporter) Bar(label string, total int64) *Bar {
	return &Bar{r: r, label: label, total: total, lastPrint: r.now(), lastPct: -1}
}

// Add records n more bytes done.
func (b *Bar) Add(n int64) {
	if b == nil || b.r.quiet {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.done += n
	now := b.r.now()
	pct := 100
	if b.total > 0 {
		pct = int(b.done * 100 / b.total)
	}
	if b.total <= 0 {
		// Unknown total: a running count.
		every := 5 * time.Second
		if b.r.tty {
			every = 100 * time.Millisecond
		}
		if now.Sub(b.lastPrint) < every {
			return
		}
		b.lastPrint = now
		if b.r.tty {
			b.r.mu.Lock()
			fmt.Fprintf(b.r.w, "\r%s: %s\x1b[K", b.label, Bytes(b.done))
			b.r.mu.Unlock()
		} else {
			b.r.Printf("%s: %s", b.label, Bytes(b.done))
		}
		return
	}
	if b.r.tty {
		if now.Sub(b.lastPrint) < 100*time.Millisecond && b.done < b.total {
			return
		}
		b.lastPrint = now
		b.r.mu.Lock()
		fmt.Fprintf(b.r.w, "\r%s %s %s / %s (%d%%)\x1b[K", b.label, bar(pct, 30), Bytes(b.done), Bytes(b.total), pct)
		b.r.mu.Unlock()
		return
	}
	// Plain mode: a line every 5 s or every 25%.
	if now.Sub(b.lastPrint) < 5*time.Second && pct/25 == b.lastPct/25 {
		return
	}
	b.lastPrint, b.lastPct = now, pct
	b.r.Printf("%s: %s / %s (%d%%)", b.label, Bytes(b.done), Bytes(b.total), pct)
}

// Finish ends the bar's line.
func (b *Bar) Finish() {
	if b == nil || b.r.quiet || !b.r.tty {
		return
	}
	b.r.mu.Lock()
	fmt.Fprint(b.r.w, "\r\x1b[K")
	b.r.mu.Unlock()
}

func bar(pct, width int) string {
	if pct > 100 {
		pct = 100
	}
	full := pct * width / 100
	return "[" + strings.Repeat("=", full) + strings.Repeat(" ", width-full) + "]"
}

// Bytes formats a byte count in binary units (1.2 GiB).
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// Every calls f with the time elapsed since it was started, every
// interval, until stop is called; stop waits for a call under way, so f is
// never called once stop has returned. A long compile's heartbeat line, a
// long push's record. interval <= 0 calls f never.
func Every(interval time.Duration, f func(elapsed time.Duration)) (stop func()) {
	if interval <= 0 {
		return func() {}
	}
	start := time.Now()
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				f(time.Since(start))
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}
