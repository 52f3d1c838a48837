package progress

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestStepLines(t *testing.T) {
	var buf bytes.Buffer
	r := New(&buf)
	clock := time.Unix(0, 0)
	r.now = func() time.Time { clock = clock.Add(600 * time.Millisecond); return clock }
	if err := r.Step("fetch", 1, 2, func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	want := errors.New("boom")
	if err := r.Step("write", 2, 2, func() error { return want }); err != want {
		t.Fatalf("Step returned %v, want the step's error", err)
	}
	got := buf.String()
	for _, line := range []string{"phase fetch (1/2): done in 600ms\n", "phase write (2/2): failed after 600ms: boom\n"} {
		if !strings.Contains(got, line) {
			t.Errorf("output %q lacks %q", got, line)
		}
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
