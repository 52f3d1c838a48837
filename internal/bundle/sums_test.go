package bundle

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"kpaas.dev/appliance/internal/testenv"
)

// TestSumsCoreutils checks SHA256SUMS with an independent tool:
// `sha256sum -c` in the bundle folder.
func TestSumsCoreutils(t *testing.T) {
	testenv.RequireTool(t, "sha256sum")
	f := newFixture(t)
	cmd := exec.Command("sha256sum", "--check", "--strict", SumsFile)
	cmd.Dir = f.dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sha256sum -c: %v\n%s", err, out)
	}
	flipByte(t, f.blobPath(t, f.busyboxOwn.Digest))
	cmd = exec.Command("sha256sum", "--check", "--quiet", SumsFile)
	cmd.Dir = f.dir
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), blobRel(f.busyboxOwn.Digest)+": FAILED") {
		t.Errorf("sha256sum -c on a damaged bundle: %v\n%s", err, out)
	}
}

func TestSumsContent(t *testing.T) {
	f := newFixture(t)
	b, err := os.ReadFile(f.store.Path(SumsFile))
	if err != nil {
		t.Fatal(err)
	}
	lines, ps := parseSums(b)
	if len(ps) > 0 {
		t.Fatal(ps)
	}
	var paths []string
	for _, l := range lines {
		paths = append(paths, l.path)
	}
	if !sort.StringsAreSorted(paths) {
		t.Errorf("paths not sorted: %v", paths)
	}
	want := map[string]bool{LayoutFile: true, IndexFile: true, LockFile: true, SBOMFile: true}
	blobs := 0
	for _, p := range paths {
		if strings.HasPrefix(p, "blobs/sha256/") {
			blobs++
			continue
		}
		if !want[p] {
			t.Errorf("unexpected %s", p)
		}
		delete(want, p)
	}
	if len(want) > 0 || blobs != 17 {
		t.Errorf("missing %v; %d blob lines, want 17", want, blobs)
	}
	if err := f.store.VerifySums(context.Background()); err != nil {
		t.Fatal(err)
	}
	// An unchanged bundle leaves the file (and so the signature) alone.
	fi, _ := os.Stat(f.store.Path(SumsFile))
	time.Sleep(10 * time.Millisecond)
	if err := f.store.WriteSums(); err != nil {
		t.Fatal(err)
	}
	fi2, _ := os.Stat(f.store.Path(SumsFile))
	if !fi.ModTime().Equal(fi2.ModTime()) {
		t.Error("WriteSums rewrote an unchanged SHA256SUMS")
	}
	flipByte(t, f.blobPath(t, f.shared.Digest))
	if err := f.store.VerifySums(context.Background()); err == nil || !strings.Contains(err.Error(), f.shared.Digest.String()) {
		t.Errorf("VerifySums on a damaged blob: %v", err)
	}
	if err := os.Remove(f.blobPath(t, f.busyboxOwn.Digest)); err != nil {
		t.Fatal(err)
	}
	if err := f.store.WriteSums(); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("WriteSums with a missing blob: %v", err)
	}
}

// TestWriteSumsDoesNotReadBlobs: rewriting the sums of a bundle with a
// 1 GiB layer takes well under 2 s because blobs are named by their
// digest. The layer is a sparse file whose name is not its digest:
// WriteSums must not notice (Verify does).
func TestWriteSumsDoesNotReadBlobs(t *testing.T) {
	s, err := Create(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	const big = 1 << 30
	layer := v1.Descriptor{MediaType: types.OCILayer, Size: big, Digest: v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("ab", 32)}}
	p, _ := s.BlobPath(layer.Digest)
	fh, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := fh.Truncate(big); err != nil {
		t.Fatal(err)
	}
	fh.Close()
	w := s.NewWriter()
	cfg, cfgSize, err := w.WriteBytes([]byte(`{"os":"linux","architecture":"amd64","rootfs":{"type":"layers"}}`))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1,
		Config: v1.Descriptor{MediaType: types.OCIConfigJSON, Digest: cfg, Size: cfgSize}, Layers: []v1.Descriptor{layer}})
	if err != nil {
		t.Fatal(err)
	}
	h, size, err := w.WriteBytes(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetEntries([]v1.Descriptor{Annotate(v1.Descriptor{MediaType: types.OCIManifestSchema1, Digest: h, Size: size}, KindOS, "kpaas.local/os/debian:12")}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := s.WriteSums(); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteSums(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("two WriteSums of a 1 GiB bundle took %v", d)
	}
	b, _ := os.ReadFile(s.Path(SumsFile))
	if !strings.Contains(string(b), layer.Digest.Hex+"  blobs/sha256/"+layer.Digest.Hex+"\n") {
		t.Errorf("SHA256SUMS lacks the layer:\n%s", b)
	}
}
