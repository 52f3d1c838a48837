package steps_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"kpaas.dev/appliance/internal/progress"
	"kpaas.dev/appliance/internal/retry"
	"kpaas.dev/appliance/internal/steps"
)

// fakeClock advances a second per reading.
func fakeClock() func() time.Time {
	t := time.Unix(0, 0)
	return func() time.Time { t = t.Add(time.Second); return t }
}

func TestRunnerChecksRunsAndRechecks(t *testing.T) {
	var out bytes.Buffer
	var events []string
	r := &steps.Runner{
		Progress: progress.New(&out, progress.Terminal(false)),
		Observe:  func(e steps.Event) { events = append(events, fmt.Sprintf("%s:%s", e.Step, e.State)) },
		Now:      fakeClock(),
	}
	doneB := false
	runs := map[string]int{}
	list := []steps.Step{
		{Name: "a", Check: func(context.Context) (bool, error) { return true, nil }, Run: func(context.Context) error { runs["a"]++; return nil }},
		{Name: "b", Check: func(context.Context) (bool, error) { return doneB, nil }, Run: func(context.Context) error { runs["b"]++; doneB = true; return nil }},
		{Name: "c", Run: func(context.Context) error { runs["c"]++; return nil }},
	}
	if err := r.Run(context.Background(), list); err != nil {
		t.Fatal(err)
	}
	if runs["a"] != 0 || runs["b"] != 1 || runs["c"] != 1 {
		t.Errorf("runs = %v", runs)
	}
	want := "phase a (1/3): already done\nphase b (2/3): done in 1s\nphase c (3/3): done in 1s\n"
	if out.String() != want {
		t.Errorf("output:\n%s\nwant:\n%s", out.String(), want)
	}
	if got := strings.Join(events, " "); got != "a:already-done b:running b:done c:running c:done" {
		t.Errorf("events = %s", got)
	}
	// A second run does nothing for the checked steps.
	out.Reset()
	if err := r.Run(context.Background(), list); err != nil {
		t.Fatal(err)
	}
	if runs["b"] != 1 {
		t.Errorf("b ran again")
	}
}

func TestRunThatLeavesCheckFalseFails(t *testing.T) {
	var out bytes.Buffer
	r := &steps.Runner{Progress: progress.New(&out, progress.Quiet(true)), Now: fakeClock()}
	ran := false
	err := r.Run(context.Background(), []steps.Step{
		{Name: "x", Check: func(context.Context) (bool, error) { return false, nil }, Run: func(context.Context) error { return nil }},
		{Name: "y", Run: func(context.Context) error { ran = true; return nil }},
	})
	var se *steps.StepError
	if !errors.As(err, &se) || se.Step != "x" || !errors.Is(err, steps.ErrCheckFailed) {
		t.Fatalf("err = %v", err)
	}
	if ran {
		t.Error("the runner went on after a failed step")
	}
	// Failures print even when quiet.
	if !strings.HasPrefix(out.String(), "phase x (1/2): failed after") {
		t.Errorf("output %q", out.String())
	}
}

// A Check that wavers right after Run (live state) runs the step again
// under its policy; with the zero policy it fails at once (above).
func TestCheckFalseAfterRunRunsAgain(t *testing.T) {
	var out bytes.Buffer
	r := &steps.Runner{Progress: progress.New(&out, progress.Terminal(false)), Now: fakeClock()}
	runs, checks := 0, 0
	err := r.Run(context.Background(), []steps.Step{{
		Name: "x",
		// Before the run, and once after it, the postcondition does not hold.
		Check: func(context.Context) (bool, error) { checks++; return checks > 2, nil },
		Run:   func(context.Context) error { runs++; return nil },
		Retry: retry.Policy{Attempts: 3, Base: time.Millisecond},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if runs != 2 || checks != 3 {
		t.Errorf("runs %d, checks %d; want 2 and 3", runs, checks)
	}
	want := "phase x (1/1): its check still fails after running; running it again\nphase x (1/1): done in 1s\n"
	if out.String() != want {
		t.Errorf("output:\n%s\nwant:\n%s", out.String(), want)
	}
	// The policy spent, the step fails.
	err = r.Run(context.Background(), []steps.Step{{
		Name:  "y",
		Check: func(context.Context) (bool, error) { return false, nil },
		Run:   func(context.Context) error { runs++; return nil },
		Retry: retry.Policy{Attempts: 2, Base: time.Millisecond},
	}})
	if !errors.Is(err, steps.ErrCheckFailed) || runs != 4 {
		t.Errorf("err %v, runs %d; want ErrCheckFailed after 2 more runs", err, runs)
	}
}

func TestRetriesOnlyRetryable(t *testing.T) {
	var out bytes.Buffer
	r := &steps.Runner{Progress: progress.New(&out, progress.Terminal(false)), Now: fakeClock()}
	policy := retry.Policy{Attempts: 3, Base: time.Millisecond}
	n := 0
	err := r.Run(context.Background(), []steps.Step{{Name: "flaky", Retry: policy, Run: func(context.Context) error {
		n++
		if n < 3 {
			return retry.Retryable(fmt.Errorf("not yet (%d)", n))
		}
		return nil
	}}})
	if err != nil || n != 3 {
		t.Fatalf("err = %v after %d tries", err, n)
	}
	// Each failed try is said with its own error, not only the last.
	for _, want := range []string{
		"phase flaky (1/1): try 1 of 3 failed: not yet (1); trying again\n",
		"phase flaky (1/1): try 2 of 3 failed: not yet (2); trying again\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("progress %q lacks %q", out.String(), want)
		}
	}
	if strings.Contains(out.String(), "try 3") {
		t.Errorf("progress %q: a try that succeeded is reported as failed", out.String())
	}
	n = 0
	permanent := errors.New("bad config")
	err = r.Run(context.Background(), []steps.Step{{Name: "bad", Retry: policy, Run: func(context.Context) error { n++; return permanent }}})
	if !errors.Is(err, permanent) || n != 1 {
		t.Fatalf("err = %v after %d tries, want one try", err, n)
	}
}

func TestCheckErrorStops(t *testing.T) {
	r := &steps.Runner{}
	boom := errors.New("cannot read")
	err := r.Run(context.Background(), []steps.Step{{Name: "c", Check: func(context.Context) (bool, error) { return false, boom }, Run: func(context.Context) error { t.Error("ran"); return nil }}})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
}

func TestCancelledContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := &steps.Runner{}
	err := r.Run(ctx, []steps.Step{{Name: "s", Run: func(context.Context) error { t.Error("ran"); return nil }}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
}
