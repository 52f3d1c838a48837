package toolchain

import (
	"path/filepath"
	"testing"
	"time"
)

// TestHarborArchiveTime: the portal's build stamp is the time of the
// archive's first entry (git archive: the commit's), not of its pax
// global header, which has none.
func TestHarborArchiveTime(t *testing.T) {
	ms, err := archiveTime(filepath.Join("..", "..", "toolchain", harborSource))
	if err != nil {
		t.Fatalf("Harbor's source archive: %v", err)
	}
	got := time.UnixMilli(ms).UTC()
	if got.Year() < 2025 || got.After(time.Now()) {
		t.Errorf("archive time %v (%d ms): want the v2.15.2 commit's time", got, ms)
	}
}
