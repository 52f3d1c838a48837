package source_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"kpaas.dev/appliance/internal/bundle"
	"kpaas.dev/appliance/packer/internal/fixture"
	"kpaas.dev/appliance/packer/internal/source"
)

// TestForms: a folder, a tar, a split export by its first part and by its
// checksum list all open to the same bundle and lock; an import is
// removed by Close.
func TestForms(t *testing.T) {
	fx := fixture.Write(t, fixture.Options{})
	s, err := bundle.Open(fx.Dir)
	if err != nil {
		t.Fatal(err)
	}
	parts := t.TempDir()
	if _, err := s.ExportSplit(t.Context(), parts, "b.tar", 64<<10); err != nil {
		t.Fatal(err)
	}
	for name, p := range map[string]string{"folder": fx.Dir, "tar": fx.Export(t),
		"first part": filepath.Join(parts, "b.tar.000"), "sums": filepath.Join(parts, "b.tar"+bundle.SumsSuffix)} {
		t.Run(name, func(t *testing.T) {
			if err := source.Check(p); err != nil {
				t.Fatal(err)
			}
			l, err := source.ReadLock(p)
			if err != nil {
				t.Fatal(err)
			}
			if l.Name != fixture.Name || l.Version != fixture.Version || source.OSImage(l).Ref != fixture.OSRef {
				t.Errorf("lock %+v", l)
			}
			b, err := source.Open(t.Context(), p, t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			if b.Imported == source.IsFolder(p) {
				t.Errorf("imported %v for a folder %v", b.Imported, source.IsFolder(p))
			}
			if _, err := b.ReadLock(); err != nil {
				t.Fatal(err)
			}
			root := b.Root()
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(root); b.Imported && !os.IsNotExist(err) {
				t.Errorf("Close left the import %s", root)
			}
		})
	}
}

func TestErrors(t *testing.T) {
	dir := t.TempDir()
	if err := source.Check(dir); err == nil {
		t.Error("an empty folder is a bundle")
	}
	junk := filepath.Join(dir, "junk.tar")
	os.WriteFile(junk, []byte(strings.Repeat("x", 2048)), 0o644)
	if _, err := source.ReadLock(junk); err == nil || !strings.Contains(err.Error(), "not an exported bundle") {
		t.Errorf("junk: %v", err)
	}
	tmp := t.TempDir()
	if _, err := source.Open(t.Context(), junk, tmp); err == nil {
		t.Error("junk opened")
	}
	if des, _ := os.ReadDir(tmp); len(des) != 0 {
		t.Errorf("a failed import left %d entries", len(des))
	}
}
