// Package retry runs an operation again when it fails with an error that is
// marked, or classified, as transient — a bounded number of times, with
// exponential backoff and jitter, honouring context cancellation.
//
// Only retryable errors are retried: a caller marks one with Retryable, or
// Transient recognises it (HTTP 5xx and 429 via the StatusCode capability,
// connection resets, timeouts, unexpected EOF). Everything else is returned
// at once. When the attempts run out, Do returns the last real error (the
// Retryable marker removed), never a generic "too many retries".
package retry

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"syscall"
	"time"
)

// Policy bounds the retries of one operation.
type Policy struct {
	Attempts int           // total tries including the first; < 1 means 1
	Base     time.Duration // wait after the first failure; doubles each time
	Max      time.Duration // cap on one wait (0: no cap)
}

// Default is a policy suited to registry requests: 5 tries over ~10 s.
var Default = Policy{Attempts: 5, Base: 500 * time.Millisecond, Max: 5 * time.Second}

// retryable marks an error as worth another try.
type retryable struct{ err error }

func (r *retryable) Error() string { return r.err.Error() }
func (r *retryable) Unwrap() error { return r.err }

// Retryable marks err as transient. Retryable(nil) is nil.
func Retryable(err error) error {
	if err == nil {
		return nil
	}
	return &retryable{err: err}
}

// StatusCoder is the optional capability of an error that carries an HTTP
// status: 5xx and 429 are transient.
type StatusCoder interface{ StatusCode() int }

// RetryAfterer is the optional capability of an error that says how long
// the server asked to wait (a 429 or 503 Retry-After header).
type RetryAfterer interface{ RetryAfter() time.Duration }

// IsRetryable reports whether err is marked with Retryable or classified
// as transient by Transient.
func IsRetryable(err error) bool {
	var r *retryable
	return errors.As(err, &r) || Transient(err)
}

// Transient classifies err without a marker: HTTP 5xx and 429 statuses,
// connection resets, refusals and closes, broken pipes, timeouts (a per-request
// deadline included: Do itself stops when its own ctx ends) and unexpected
// EOFs. Cancellation is never transient.
func Transient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	var sc StatusCoder
	if errors.As(err, &sc) {
		c := sc.StatusCode()
		return c >= 500 || c == 429
	}
	if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		return true
	}
	return isNetTimeout(err)
}

func isNetTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Do calls fn until it succeeds, fails with an error that is not
// retryable, the policy's attempts are spent, or ctx ends. It returns nil
// or the last error fn returned (without the Retryable marker); when ctx
// ends during a wait, that error is joined with ctx.Err().
func Do(ctx context.Context, p Policy, fn func(ctx context.Context) error) error {
	attempts := max(p.Attempts, 1)
	var last error
	for i := range attempts {
		if err := ctx.Err(); err != nil {
			if last != nil {
				return errors.Join(last, err)
			}
			return err
		}
		err := fn(ctx)
		if err == nil {
			return nil
		}
		last = unmark(err)
		if !IsRetryable(err) || i == attempts-1 {
			return last
		}
		wait := p.Backoff(i)
		var ra RetryAfterer
		if errors.As(err, &ra) && ra.RetryAfter() > wait {
			wait = ra.RetryAfter()
			if p.Max > 0 && wait > p.Max {
				wait = p.Max
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return errors.Join(last, ctx.Err())
		case <-t.C:
		}
	}
	return last
}

// Backoff is the wait after failed attempt i (0-based): Base·2^i capped at
// Max, with "equal jitter" (a random point in its upper half), so that
// parallel workers do not retry in lockstep.
func (p Policy) Backoff(i int) time.Duration {
	if p.Base <= 0 {
		return 0
	}
	d := p.Base
	for range i {
		d *= 2
		if p.Max > 0 && d >= p.Max || d <= 0 {
			d = p.Max
			break
		}
	}
	if p.Max > 0 && d > p.Max {
		d = p.Max
	}
	half := d / 2
	return half + rand.N(half+1)
}

// unmark removes Retryable markers at the top of err's chain.
func unmark(err error) error {
	for {
		r, ok := err.(*retryable)
		if !ok {
			return err
		}
		err = r.err
	}
}
