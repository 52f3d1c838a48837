package retry_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"kpaas.dev/appliance/internal/retry"
)

type statusErr int

func (s statusErr) Error() string   { return fmt.Sprintf("status %d", int(s)) }
func (s statusErr) StatusCode() int { return int(s) }

var fast = retry.Policy{Attempts: 4, Base: time.Millisecond, Max: 4 * time.Millisecond}

func TestDoRetriesOnlyRetryable(t *testing.T) {
	permanent := errors.New("permanent")
	calls := 0
	err := retry.Do(context.Background(), fast, func(context.Context) error {
		calls++
		return permanent
	})
	if !errors.Is(err, permanent) || calls != 1 {
		t.Fatalf("err=%v calls=%d, want permanent after 1 call", err, calls)
	}

	calls = 0
	err = retry.Do(context.Background(), fast, func(context.Context) error {
		calls++
		if calls < 3 {
			return retry.Retryable(errors.New("flaky"))
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("err=%v calls=%d, want success on 3rd call", err, calls)
	}
}

func TestDoReturnsLastRealError(t *testing.T) {
	calls := 0
	err := retry.Do(context.Background(), fast, func(context.Context) error {
		calls++
		return retry.Retryable(fmt.Errorf("try %d", calls))
	})
	if calls != 4 {
		t.Fatalf("calls=%d, want 4", calls)
	}
	if err == nil || err.Error() != "try 4" {
		t.Fatalf("err=%v, want the last error", err)
	}
	if retry.IsRetryable(err) {
		t.Fatalf("returned error still carries the retryable marker")
	}
}

func TestTransient(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{statusErr(503), true},
		{statusErr(500), true},
		{statusErr(429), true},
		{statusErr(404), false},
		{statusErr(401), false},
		{fmt.Errorf("put: %w", syscall.ECONNRESET), true},
		{&net.OpError{Op: "read", Err: syscall.ECONNRESET}, true},
		{io.ErrUnexpectedEOF, true},
		{context.Canceled, false},
		{fmt.Errorf("request: %w", context.DeadlineExceeded), true},
		{errors.New("digest mismatch"), false},
	} {
		if got := retry.Transient(tc.err); got != tc.want {
			t.Errorf("Transient(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestDoHonoursContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	slow := retry.Policy{Attempts: 10, Base: time.Hour}
	calls := 0
	go func() { time.Sleep(20 * time.Millisecond); cancel() }()
	start := time.Now()
	err := retry.Do(ctx, slow, func(context.Context) error {
		calls++
		return statusErr(502)
	})
	if time.Since(start) > 5*time.Second {
		t.Fatalf("Do did not stop when ctx was cancelled")
	}
	if !errors.Is(err, context.Canceled) || !errors.As(err, new(statusErr)) || calls != 1 {
		t.Fatalf("err=%v calls=%d, want the 502 joined with context.Canceled after 1 call", err, calls)
	}
}

func TestBackoffBounds(t *testing.T) {
	p := retry.Policy{Base: 100 * time.Millisecond, Max: time.Second}
	for i := range 12 {
		d := p.Backoff(i)
		if d < 0 || d > time.Second {
			t.Fatalf("Backoff(%d) = %v, outside [0, Max]", i, d)
		}
	}
	if d := p.Backoff(0); d < 50*time.Millisecond || d > 100*time.Millisecond {
		t.Fatalf("Backoff(0) = %v, want within [Base/2, Base]", d)
	}
}

func ExampleDo() {
	tries := 0
	err := retry.Do(context.Background(), retry.Policy{Attempts: 3, Base: time.Millisecond}, func(ctx context.Context) error {
		tries++
		if tries == 1 {
			return retry.Retryable(errors.New("registry busy"))
		}
		return nil
	})
	fmt.Println(tries, err)
	// Output: 2 <nil>
}
