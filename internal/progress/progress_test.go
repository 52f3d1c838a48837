package progress

import (
	"bytes"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestPrefixAndQuiet(t *testing.T) {
	var buf bytes.Buffer
	r := New(&buf, Prefix("kpaas-init: "), Quiet(true))
	r.Printf("phase %s (%d/%d): done in %s", "plan", 3, 4, 100*time.Millisecond)
	r.Errorf("phase %s (%d/%d): failed after %s: %v", "mounts", 4, 4, time.Second, errors.New("100% full"))
	// Quiet drops the done line, never the failure; the prefix is not a format.
	if got, want := buf.String(), "kpaas-init: phase mounts (4/4): failed after 1s: 100% full\n"; got != want {
		t.Errorf("output %q, want %q", got, want)
	}
}

func TestPlainBarThrottles(t *testing.T) {
	var buf bytes.Buffer
	r := New(&buf)
	clock := time.Unix(0, 0)
	r.now = func() time.Time { return clock }
	b := r.Bar("copy", 100)
	for i := 0; i < 100; i++ {
		b.Add(1)
	}
	// Plain mode prints at each quarter, not for every Add.
	if n := strings.Count(buf.String(), "\n"); n != 4 {
		t.Errorf("plain bar printed %d lines, want 4 (25%%, 50%%, 75%%, 100%%):\n%s", n, buf.String())
	}
	if strings.Contains(buf.String(), "\r") {
		t.Errorf("plain bar used a carriage return")
	}
}

func TestBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536 << 20: "1.5 GiB"} {
		if got := Bytes(n); got != want {
			t.Errorf("Bytes(%d) = %q, want %q", n, got, want)
		}
	}
}

// Every calls f repeatedly with growing elapsed times, never after stop
// has returned, and never when the interval is not positive.
func TestEvery(t *testing.T) {
	var mu sync.Mutex
	var calls []time.Duration
	stop := Every(5*time.Millisecond, func(elapsed time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, elapsed)
	})
	time.Sleep(60 * time.Millisecond)
	stop()
	mu.Lock()
	n := len(calls)
	got := append([]time.Duration(nil), calls...)
	mu.Unlock()
	if n < 2 {
		t.Fatalf("%d calls in 60 ms at a 5 ms interval", n)
	}
	for i := 1; i < n; i++ {
		if got[i] <= got[i-1] {
			t.Errorf("elapsed times not growing: %v", got)
		}
	}
	time.Sleep(20 * time.Millisecond)
	mu.Lock()
	if len(calls) != n {
		t.Errorf("%d calls after stop returned", len(calls)-n)
	}
	mu.Unlock()

	never := Every(0, func(time.Duration) { t.Error("called with interval 0") })
	time.Sleep(10 * time.Millisecond)
	never()
}
