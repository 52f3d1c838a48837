package bundle

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestInspect(t *testing.T) {
	f := newFixture(t)
	if _, err := f.store.WriteBlob(mustHash(t, []byte("left over")), 9, strings.NewReader("left over")); err != nil {
		t.Fatal(err)
	}
	in, err := f.store.Inspect()
	if err != nil {
		t.Fatal(err)
	}
	byRef := map[string]ArtifactInfo{}
	for _, a := range in.Artifacts {
		byRef[a.Ref] = a
	}
	nginx := f.nginxIndex.Size + f.shared.Size
	for _, p := range []string{"linux/amd64", "linux/arm64"} {
		nginx += f.nginx[p].Size + f.nginxConfig[p].Size + f.nginxOwn[p].Size
	}
	if a := byRef[refNginx]; a.Size != nginx || a.Blobs != 8 || strings.Join(a.Platforms, ",") != "linux/amd64,linux/arm64" || a.Kind != KindImage {
		t.Errorf("nginx: %+v, want size %d, 8 blobs", a, nginx)
	}
	if a := byRef[refBusybox]; a.Blobs != 4 || strings.Join(a.Platforms, ",") != "linux/amd64" {
		t.Errorf("busybox: %+v", a)
	}
	if a := byRef[refFile]; a.Blobs != 3 || a.Kind != KindFile || a.Size != f.file.Size+2+int64(len(f.fileContent)) || a.Platforms != nil {
		t.Errorf("file: %+v", a)
	}
	// The sizes agree with the lock, which sums the walk as the bake does.
	var logical int64
	for _, la := range f.lock(t).Artifacts {
		if byRef[la.Ref].Size != la.Size || byRef[la.Ref].Digest != la.Digest {
			t.Errorf("%s: inspect %d %s, lock %d %s", la.Ref, byRef[la.Ref].Size, byRef[la.Ref].Digest, la.Size, la.Digest)
		}
		logical += la.Size
	}
	tot := in.Totals
	if tot.Artifacts != 4 || tot.Blobs != 17 || tot.LogicalBytes != logical {
		t.Errorf("totals %+v, want 4 artifacts, 17 blobs, %d logical bytes", tot, logical)
	}
	// Only the shared layer is stored once for two artifacts.
	if tot.SavedBytes != f.shared.Size || tot.UniqueBytes != logical-f.shared.Size {
		t.Errorf("saved %d, unique %d; want %d, %d", tot.SavedBytes, tot.UniqueBytes, f.shared.Size, logical-f.shared.Size)
	}
	if tot.UnreferencedBlobs != 1 || tot.UnreferencedBytes != 9 {
		t.Errorf("unreferenced %d blobs, %d bytes", tot.UnreferencedBlobs, tot.UnreferencedBytes)
	}
	var disk int64
	for _, b := range files(t, f.dir) {
		disk += int64(len(b))
	}
	if tot.DiskBytes != disk {
		t.Errorf("disk bytes %d, want %d", tot.DiskBytes, disk)
	}
}

// TestTempFilesReported: temp files a killed write left are named by
// verify and inspect (not as blobs), and RemoveTemp removes them.
func TestTempFilesReported(t *testing.T) {
	f := newFixture(t)
	before, err := f.store.Inspect()
	if err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(f.dir, "blobs", "sha256", ".tmp-"+strings.Repeat("a", 64)+"-123")
	if err := os.WriteFile(tmp, make([]byte, 1000), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := f.store.Verify(context.Background(), VerifyOptions{})
	if err != nil || r.TempFiles != 1 || r.TempBytes != 1000 {
		t.Errorf("verify: %d temp files, %d bytes, %v; want 1, 1000, no problem", r.TempFiles, r.TempBytes, err)
	}
	in, err := f.store.Inspect()
	if err != nil {
		t.Fatal(err)
	}
	if in.Totals.TempFiles != 1 || in.Totals.TempBytes != 1000 || in.Totals.UnreferencedBlobs != 0 || in.Totals.DiskBytes != before.Totals.DiskBytes {
		t.Errorf("inspect totals = %+v, want 1 temp file of 1000 bytes", in.Totals)
	}
	if n, size, err := f.store.RemoveTemp(); n != 1 || size != 1000 || err != nil {
		t.Errorf("RemoveTemp = %d, %d, %v", n, size, err)
	}
	if _, err := os.Stat(tmp); err == nil {
		t.Error("temp file still there")
	}
}

// TestEmptyIndexIsAnArray: a new bundle's index.json is a valid OCI index
// ("manifests": [], not null).
func TestEmptyIndexIsAnArray(t *testing.T) {
	dir := t.TempDir()
	if _, err := Create(dir); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, IndexFile))
	if err != nil {
		t.Fatal(err)
	}
	var im struct {
		Manifests []any `json:"manifests"`
	}
	if err := json.Unmarshal(b, &im); err != nil || im.Manifests == nil {
		t.Errorf("index.json = %s, want \"manifests\": []", b)
	}
}
