package cli

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSourceDateEpoch(t *testing.T) {
	t.Setenv(SourceDateEpochEnv, "")
	if _, ok, err := sourceDateEpoch(); ok || err != nil {
		t.Errorf("unset: ok %v, err %v", ok, err)
	}
	t.Setenv(SourceDateEpochEnv, "1767225600")
	if got, ok, err := sourceDateEpoch(); !ok || err != nil || !got.Equal(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("1767225600: %v, %v, %v", got, ok, err)
	}
}

// TestBadSourceDateEpoch: every command that takes the variable refuses a
// bad value with the one message, before doing any work.
func TestBadSourceDateEpoch(t *testing.T) {
	dir := t.TempDir()
	want := `SOURCE_DATE_EPOCH="-5": want a whole number of seconds since 1970`
	t.Setenv(SourceDateEpochEnv, "-5")
	for _, args := range [][]string{
		{"bake", filepath.Join(dir, "absent.yaml"), "-o", filepath.Join(dir, "b")},
		{"image", "build", "--bundle", filepath.Join(dir, "absent"), "-o", filepath.Join(dir, "m")},
		{"os", "build", "debian-12", "-o", filepath.Join(dir, "os")},
		{"toolchain", "build", "--out", filepath.Join(dir, "mirror"), "--cache", filepath.Join(dir, "cache")},
	} {
		if _, _, err := kpaas(t, args...); err == nil || err.Error() != want {
			t.Errorf("kpaas %s: err = %v, want %q", strings.Join(args, " "), err, want)
		}
	}
}
