package journal_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"kpaas.dev/appliance/agent/journal"
	"kpaas.dev/appliance/internal/steps"
)

func TestRecordSaveReopen(t *testing.T) {
	p := filepath.Join(t.TempDir(), "var/lib/kpaas/journal.json")
	j := journal.Open(p)
	if j.Torn != nil || j.Runs != 0 {
		t.Fatalf("new journal: %+v", j)
	}
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := j.BeginRun(t0); err != nil {
		t.Fatal(err)
	}
	j.Record(steps.Event{Step: "host", State: steps.Running, Start: t0})
	j.Record(steps.Event{Step: "host", State: steps.Done, Start: t0, Duration: 1500 * time.Millisecond})
	j.Record(steps.Event{Step: "runtime", State: steps.Failed, Start: t0, Duration: time.Second, Err: errors.New("boom")})

	k := journal.Open(p)
	if k.Torn != nil {
		t.Fatal(k.Torn)
	}
	if k.Runs != 1 || len(k.Phases) != 2 || len(k.History) != 2 {
		t.Fatalf("reopened: %+v", k)
	}
	if ph, _ := k.Phase("host"); ph.State != steps.Done || ph.Seconds != 1.5 {
		t.Errorf("host: %+v", ph)
	}
	if ph, _ := k.Phase("runtime"); ph.Error != "boom" {
		t.Errorf("runtime: %+v", ph)
	}
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi.Mode().Perm())
	}
}

func TestTornJournalStartsOver(t *testing.T) {
	p := filepath.Join(t.TempDir(), "journal.json")
	os.WriteFile(p, []byte(`{"version":1,"phases":[{"name":"ho`), 0o600)
	j := journal.Open(p)
	if j.Torn == nil {
		t.Fatal("a torn file was trusted")
	}
	if len(j.Phases) != 0 {
		t.Errorf("phases from a torn file: %v", j.Phases)
	}
	if err := j.BeginRun(time.Now()); err != nil {
		t.Fatal(err)
	}
	if k := journal.Open(p); k.Torn != nil || k.Runs != 1 {
		t.Errorf("rewritten journal: %+v", k)
	}
}

func TestHistoryBounded(t *testing.T) {
	j := journal.Open(filepath.Join(t.TempDir(), "j.json"))
	for i := 0; i < 500; i++ {
		j.Record(steps.Event{Step: "x", State: steps.Done})
	}
	if len(j.History) != 200 {
		t.Errorf("history holds %d entries", len(j.History))
	}
}
