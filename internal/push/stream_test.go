package push_test

import (
	"context"
	"encoding/json"
	"io"
	"math/rand/v2"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"kpaas.dev/appliance/internal/bundle"
	"kpaas.dev/appliance/internal/push"
	"kpaas.dev/appliance/internal/push/registrytest"
)

// seeded returns n pseudo-random bytes from seed, never all in memory.
func seeded(seed uint64, n int64) io.Reader {
	var s [32]byte
	s[0] = byte(seed)
	return io.LimitReader(rand.NewChaCha8(s), n)
}

// bigBundle writes one image whose single layer has size bytes, streamed
// into the bundle (the test process never holds the layer).
func bigBundle(t testing.TB, size int64, seed uint64) *bundle.Store {
	t.Helper()
	s, err := bundle.Create(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	w := s.NewWriter()
	lh, ln, err := v1.SHA256(seeded(seed, size))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteStream(lh, ln, func() (io.ReadCloser, error) { return io.NopCloser(seeded(seed, size)), nil }); err != nil {
		t.Fatal(err)
	}
	cfg, _ := json.Marshal(v1.ConfigFile{Architecture: "amd64", OS: "linux", RootFS: v1.RootFS{Type: "layers", DiffIDs: []v1.Hash{lh}}})
	ch, cn, err := w.WriteBytes(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := json.Marshal(v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1,
		Config: v1.Descriptor{MediaType: types.OCIConfigJSON, Digest: ch, Size: cn},
		Layers: []v1.Descriptor{{MediaType: types.OCIUncompressedLayer, Digest: lh, Size: ln}}})
	mh, mn, err := w.WriteBytes(m)
	if err != nil {
		t.Fatal(err)
	}
	d := bundle.Annotate(v1.Descriptor{MediaType: types.OCIManifestSchema1, Digest: mh, Size: mn}, bundle.KindImage, "docker.io/kpaas/big:1")
	if err := s.SetEntries([]v1.Descriptor{d}); err != nil {
		t.Fatal(err)
	}
	return s
}

// peakHeap runs fn and returns how far the live heap grew above where it
// was before, sampled every millisecond.
func peakHeap(fn func()) uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	var peak atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				var m runtime.MemStats
				runtime.ReadMemStats(&m)
				if m.HeapAlloc > base && m.HeapAlloc-base > peak.Load() {
					peak.Store(m.HeapAlloc - base)
				}
			}
		}
	}()
	fn()
	close(stop)
	<-done
	return peak.Load()
}

func TestStreamsLargeBlobs(t *testing.T) {
	if testing.Short() {
		t.Skip("pushes 2×96 MiB")
	}
	const size = 96 << 20
	for _, tc := range []struct {
		name      string
		threshold int64
	}{{"chunked", 0}, {"monolithic", 1 << 30}} {
		t.Run(tc.name, func(t *testing.T) {
			s := bigBundle(t, size, 7)
			reg := registrytest.New(t)
			o := opts(reg.Host, nil)
			o.ChunkThreshold = tc.threshold
			var sum push.Summary
			var err error
			grew := peakHeap(func() { sum, err = push.Push(context.Background(), s, o) })
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: %s; heap grew at most %.1f MiB (registry included)", tc.name, sum, float64(grew)/(1<<20))
			if grew > 32<<20 {
				t.Errorf("heap grew by %d MiB pushing a %d MiB blob: not streamed", grew>>20, size>>20)
			}
			if tc.threshold == 0 && sum.Chunks != 6 {
				t.Errorf("%d chunks, want 6 of 16 MiB", sum.Chunks)
			}
		})
	}
}
