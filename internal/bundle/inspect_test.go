package bundle

import (
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
