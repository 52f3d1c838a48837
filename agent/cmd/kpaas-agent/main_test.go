package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"kpaas.dev/appliance/internal/bundle"
)

// writeBundle makes a bundle with one file artifact and its lock.
func writeBundle(t *testing.T, dir string, withLock bool) {
	t.Helper()
	s, err := bundle.Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	w := s.NewWriter()
	h, n, err := w.WriteBytes([]byte("hello\n"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := bundle.FileManifest(v1.Descriptor{MediaType: "application/octet-stream", Digest: h, Size: n}, "hello", "1", "0644", "/etc/hello")
	if err != nil {
		t.Fatal(err)
	}
	mh, mn, err := w.WriteBytes(m)
	if err != nil {
		t.Fatal(err)
	}
	ref := "kpaas.local/files/hello:1"
	if err := s.SetEntries([]v1.Descriptor{bundle.Annotate(v1.Descriptor{MediaType: types.OCIManifestSchema1, Digest: mh, Size: mn}, bundle.KindFile, ref)}); err != nil {
		t.Fatal(err)
	}
	if !withLock {
		return
	}
	lock := &bundle.Lock{APIVersion: "kpaas.dev/v1alpha1", Kind: bundle.LockKind, Name: "demo", Version: "0.1.0",
		Artifacts: []bundle.LockArtifact{{Kind: bundle.KindFile, Ref: ref, Digest: mh.String()}}}
	b, err := lock.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.WriteFile(bundle.LockFile, b); err != nil {
		t.Fatal(err)
	}
}

func TestRunReady(t *testing.T) {
	dir := t.TempDir()
	writeBundle(t, filepath.Join(dir, "bundle"), true)
	var out, errb bytes.Buffer
	err := run(context.Background(), []string{"-bundle", filepath.Join(dir, "bundle"), "-config", filepath.Join(dir, "none")}, &out, &errb)
	if err != nil {
		t.Fatal(err)
	}
	if want := "kpaas-agent dev: bundle demo 0.1.0 (1 artifacts) ready\n"; !strings.HasSuffix(out.String(), want) {
		t.Errorf("output %q, want it to end with %q", out.String(), want)
	}
	if !strings.Contains(out.String(), "no config disk") {
		t.Errorf("output %q does not mention the missing config disk", out.String())
	}

	os.MkdirAll(filepath.Join(dir, "config"), 0o755)
	os.WriteFile(filepath.Join(dir, "config", "cluster.yaml"), []byte("x"), 0o644)
	out.Reset()
	if err := run(context.Background(), []string{"-bundle", filepath.Join(dir, "bundle"), "-config", filepath.Join(dir, "config")}, &out, &errb); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "config disk at "+filepath.Join(dir, "config")+" (1 files)") {
		t.Errorf("output %q", out.String())
	}
}

func TestRunNoLock(t *testing.T) {
	dir := t.TempDir()
	writeBundle(t, dir, false)
	err := run(context.Background(), []string{"-bundle", dir}, new(bytes.Buffer), new(bytes.Buffer))
	if err == nil || !strings.Contains(err.Error(), "kpaas-lock.json") {
		t.Fatalf("err = %v, want a missing lock", err)
	}
}

func TestRunNoBundle(t *testing.T) {
	err := run(context.Background(), []string{"-bundle", t.TempDir()}, new(bytes.Buffer), new(bytes.Buffer))
	if err == nil || !strings.Contains(err.Error(), "not an OCI layout") {
		t.Fatalf("err = %v", err)
	}
}
