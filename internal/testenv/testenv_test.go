package testenv

import (
	"fmt"
	"runtime"
	"testing"
)

// recorder is a testing.TB that records how a test ended.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Helper() {}
func (r *recorder) Skip(args ...any) {
	r.skipped = fmt.Sprint(args...)
	runtime.Goexit()
}
func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func run(fn func(t testing.TB)) *recorder {
	r := &recorder{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(r)
	}()
	<-done
	return r
}

// TestSkipOrFail: a missing tool skips a test on a developer's machine
// and fails it in CI.
func TestSkipOrFail(t *testing.T) {
	missing := func(t testing.TB) { RequireTool(t, "kpaas-no-such-tool") }
	t.Setenv("CI", "")
	if r := run(missing); r.skipped == "" || r.failed != "" {
		t.Errorf("without CI: skipped %q, failed %q; want a skip", r.skipped, r.failed)
	}
	t.Setenv("CI", "true")
	r := run(missing)
	if r.failed == "" || r.skipped != "" {
		t.Errorf("CI=true: skipped %q, failed %q; want a failure", r.skipped, r.failed)
	}
	t.Logf("CI=true: %s", r.failed)
	if r := run(func(t testing.TB) { RequireTool(t, "sh") }); r.failed != "" || r.skipped != "" {
		t.Errorf("sh: %+v; want neither skip nor failure", r)
	}
}
