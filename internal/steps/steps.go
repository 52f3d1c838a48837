// Package steps is the one step runner of kpaas and kpaas-agent. Multi-step
// work is a literal list of Steps built in one function; a Runner runs
// them in order and reports each in the progress protocol:
//
//	phase NAME (n/m): already done
//	phase NAME (n/m): done in 1.2s
//	phase NAME (n/m): failed after 3.4s: <error>
//
// A step may have a Check, its postcondition. The runner asks it first and
// skips a step whose postcondition already holds (that is how the agent
// resumes after a power cut: the checks, not a journal, say what is done);
// after Run it asks again: a Run that leaves its Check false is run again
// under the step's retry policy, and an error once the policy is spent.
// Run is retried only for errors marked retryable (internal/retry), with
// the step's bounded policy.
//
// Lifecycle: Run is called once per list; it stops at the first failed
// step and returns that step's error wrapped in a *StepError. The Observe
// hook sees every transition (the agent's journal and status file).
package steps

import (
	"context"
	"errors"
	"fmt"
	"time"

	"kpaas.dev/appliance/internal/progress"
	"kpaas.dev/appliance/internal/retry"
)

// Step is one unit of multi-step work.
type Step struct {
	Name string
	// Check reports whether the step's postcondition holds already. nil
	// means the step always runs.
	Check func(ctx context.Context) (bool, error)
	// Run makes the postcondition true. It must be safe to call again
	// after an interruption at any point.
	Run func(ctx context.Context) error
	// Retry bounds the retries of errors marked retryable; the zero
	// policy tries once.
	Retry retry.Policy
}

// State is where a step is.
type State string

const (
	Running State = "running"
	Done    State = "done"
	Skipped State = "already-done" // Check held before Run
	Failed  State = "failed"
)

// Event is one transition of one step.
type Event struct {
	Step     string
	N, M     int // 1-based position and count
	State    State
	Start    time.Time
	Duration time.Duration // for Done, Skipped and Failed
	Err      error         // for Failed
}

// StepError is the error of the step that stopped a run.
type StepError struct {
	Step string
	Err  error
}

func (e *StepError) Error() string { return e.Step + ": " + e.Err.Error() }
func (e *StepError) Unwrap() error { return e.Err }

// ErrCheckFailed is wrapped by the error of a step whose Run returned
// without error but whose Check still does not hold.
var ErrCheckFailed = errors.New("its check still fails after running")

// Runner runs lists of steps.
type Runner struct {
	// Progress receives the protocol lines (nil: none).
	Progress *progress.Reporter
	// Observe, when set, is called on every transition, in order.
	Observe func(Event)
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

// Run runs steps in order until one fails or ctx ends.
func (r *Runner) Run(ctx context.Context, list []Step) error {
	now := r.Now
	if now == nil {
		now = time.Now
	}
	for i, s := range list {
		ev := Event{Step: s.Name, N: i + 1, M: len(list), Start: now()}
		if err := ctx.Err(); err != nil {
			return r.fail(ev, now, err)
		}
		if s.Check != nil {
			ok, err := s.Check(ctx)
			if err != nil {
				return r.fail(ev, now, fmt.Errorf("checking: %w", err))
			}
			if ok {
				ev.State, ev.Duration = Skipped, now().Sub(ev.Start)
				r.emit(ev)
				r.Progress.Printf("phase %s (%d/%d): already done", s.Name, ev.N, ev.M)
				continue
			}
		}
		ev.State = Running
		r.emit(ev)
		attempt, attempts := 0, max(s.Retry.Attempts, 1)
		err := retry.Do(ctx, s.Retry, func(ctx context.Context) error {
			attempt++
			if err := s.Run(ctx); err != nil {
				if retry.IsRetryable(err) && attempt < attempts {
					// Said now: the last try's error is the only one the
					// failure would show otherwise.
					r.Progress.Printf("phase %s (%d/%d): try %d of %d failed: %v; trying again", s.Name, ev.N, ev.M, attempt, attempts, err)
				}
				return err
			}
			if s.Check == nil {
				return nil
			}
			ok, cerr := s.Check(ctx)
			switch {
			case cerr != nil:
				return fmt.Errorf("checking after run: %w", cerr)
			case !ok && attempt < attempts:
				// A postcondition on live state (a pod's readiness on a
				// busy node) can waver right after Run made it true: the
				// step runs again under its policy (Run is safe to repeat).
				r.Progress.Printf("phase %s (%d/%d): %v; running it again", s.Name, ev.N, ev.M, ErrCheckFailed)
				return retry.Retryable(ErrCheckFailed)
			case !ok:
				return ErrCheckFailed
			}
			return nil
		})
		if err != nil {
			return r.fail(ev, now, err)
		}
		ev.State, ev.Duration = Done, now().Sub(ev.Start)
		r.emit(ev)
		r.Progress.Printf("phase %s (%d/%d): done in %s", s.Name, ev.N, ev.M, round(ev.Duration))
	}
	return nil
}

func (r *Runner) fail(ev Event, now func() time.Time, err error) error {
	ev.State, ev.Duration, ev.Err = Failed, now().Sub(ev.Start), err
	r.emit(ev)
	r.Progress.Errorf("phase %s (%d/%d): failed after %s: %v", ev.Step, ev.N, ev.M, round(ev.Duration), err)
	return &StepError{Step: ev.Step, Err: err}
}

func (r *Runner) emit(ev Event) {
	if r.Observe != nil {
		r.Observe(ev)
	}
}

func round(d time.Duration) time.Duration { return d.Round(100 * time.Millisecond) }
