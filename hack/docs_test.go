package hack_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// docFiles are the documentation files that must stand alone.
func docFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("../docs/*.md")
	if err != nil || len(files) == 0 {
		t.Fatalf("no docs: %v", err)
	}
	return append(files, "../README.md", "../bundles/kpaas-1.4.1.yaml", "../bundles/demo.yaml")
}

// TestDocsStandAlone: the documentation cites nothing outside the
// repository: no design notes, research files, issue numbers or paths of
// a build machine.
func TestDocsStandAlone(t *testing.T) {
	bad := regexp.MustCompile(`DESIGN\.md|DESIGN §|research/|\bresearch\b|\b[Ii]ssue \d+|/work/|/home/|/root/`)
	for _, f := range docFiles(t) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(b), "\n") {
			if m := bad.FindString(line); m != "" {
				t.Errorf("%s:%d cites %q, which is not in the repository: %s", f, i+1, m, line)
			}
		}
	}
}

// TestReadmeLayoutExists: every folder the README's Layout table lists is
// in the repository.
func TestReadmeLayoutExists(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, layout, ok := strings.Cut(string(b), "## Layout")
	if !ok {
		t.Fatal("README has no Layout section")
	}
	layout, _, _ = strings.Cut(layout, "\n## ")
	rows := regexp.MustCompile("(?m)^\\| `([a-z-]+)/` \\|").FindAllStringSubmatch(layout, -1)
	if len(rows) == 0 {
		t.Fatal("no folders in the Layout table")
	}
	for _, r := range rows {
		if fi, err := os.Stat(filepath.Join("..", r[1])); err != nil || !fi.IsDir() {
			t.Errorf("README's Layout lists %s/, which does not exist", r[1])
		}
	}
}
