package atomicfile

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFileModeAndContent(t *testing.T) {
	p := filepath.Join(t.TempDir(), "a", "b", "secret")
	if err := WriteFile(p, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	if err := WriteFile(p, []byte("yy"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "yy" {
		t.Errorf("content %q", b)
	}
}

func TestFailedFillLeavesTargetAndNoTemp(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := WriteFile(p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	err := Write(p, 0o644, func(f *os.File) error {
		f.Write([]byte("half"))
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "old" {
		t.Errorf("target changed to %q", b)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("folder holds %d entries, want the target only", len(ents))
	}
}

func TestUpdate(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	for i, c := range []struct {
		data string
		mode os.FileMode
		want bool
	}{{"a", 0o644, true}, {"a", 0o644, false}, {"a", 0o600, true}, {"b", 0o600, true}, {"b", 0o600, false}} {
		changed, err := Update(p, []byte(c.data), c.mode)
		if err != nil {
			t.Fatal(err)
		}
		if changed != c.want {
			t.Errorf("step %d: changed = %v, want %v", i, changed, c.want)
		}
	}
}

func TestNoDirSyncTempName(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "blob")
	err := Write(p, 0o644, func(f *os.File) error {
		// The temp file is beside the target, named for cleaners to find.
		if got := filepath.Base(f.Name()); filepath.Dir(f.Name()) != dir || len(got) <= len(TempPrefix+"blob-") || got[:len(TempPrefix+"blob-")] != TempPrefix+"blob-" {
			t.Errorf("temp file %s", f.Name())
		}
		_, err := f.Write([]byte("content"))
		return err
	}, NoDirSync())
	if err != nil {
		t.Fatal(err)
	}
	if err := SyncDir(dir); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "content" {
		t.Errorf("content %q", b)
	}
}
