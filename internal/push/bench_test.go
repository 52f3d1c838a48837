package push_test

import (
	"context"
	"fmt"
	"os"
	"testing"

	"kpaas.dev/appliance/internal/bundle"
	"kpaas.dev/appliance/internal/push"
	"kpaas.dev/appliance/internal/push/registrytest"
)

// Benchmarks push into an in-process distribution registry on 127.0.0.1.
// For comparisons with other tools (make bench runs skopeo copy against
// the same kind of target), two variables point them elsewhere:
//
//	KPAAS_BENCH_BUNDLE=DIR       push this bundle instead of a generated one
//	KPAAS_BENCH_REGISTRY=HOST    push into this registry (plain HTTP allowed)
//
// They report MB/s (bytes of blobs in the bundle per second).

func benchTarget(b *testing.B) string {
	if h := os.Getenv("KPAAS_BENCH_REGISTRY"); h != "" {
		return h
	}
	return registrytest.New(b).Host
}

func benchBundle(b *testing.B) (*bundle.Store, int64) {
	if dir := os.Getenv("KPAAS_BENCH_BUNDLE"); dir != "" {
		s, err := bundle.Open(dir)
		if err != nil {
			b.Fatal(err)
		}
		return s, blobBytes(b, s)
	}
	tb := makeBundle(b, 4<<20) // ~25 MiB of blobs in 6 artifacts
	var n int64
	for _, sz := range tb.blobs {
		n += sz
	}
	return tb.store, n
}

func blobBytes(b *testing.B, s *bundle.Store) int64 {
	entries, err := s.Entries()
	if err != nil {
		b.Fatal(err)
	}
	seen := map[string]int64{}
	for _, e := range entries {
		_ = s.Walk(e.Descriptor, func(n bundle.Node) error {
			seen[n.Descriptor.Digest.String()] = n.Descriptor.Size
			return nil
		})
	}
	var total int64
	for _, sz := range seen {
		total += sz
	}
	return total
}

// BenchmarkPush measures a full push: each iteration pushes the bundle
// under a fresh prefix, so every blob is sent again.
func BenchmarkPush(b *testing.B) {
	s, size := benchBundle(b)
	host := benchTarget(b)
	b.SetBytes(size)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		o := opts(host, nil)
		o.Mapping = push.Mapping{Prefix: fmt.Sprintf("bench%d-%d", os.Getpid(), i)}
		sum, err := push.Push(context.Background(), s, o)
		if err != nil {
			b.Fatal(err)
		}
		if sum.BlobsSent == 0 {
			b.Fatal("nothing sent")
		}
	}
}

// BenchmarkRepush measures pushing an unchanged bundle again: probes only.
func BenchmarkRepush(b *testing.B) {
	s, _ := benchBundle(b)
	host := benchTarget(b)
	o := opts(host, nil)
	if _, err := push.Push(context.Background(), s, o); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	var reqs int64
	for i := 0; i < b.N; i++ {
		sum, err := push.Push(context.Background(), s, o)
		if err != nil {
			b.Fatal(err)
		}
		if sum.BlobsSent != 0 {
			b.Fatalf("re-push sent %d blobs", sum.BlobsSent)
		}
		reqs = sum.Requests
	}
	b.ReportMetric(float64(reqs), "requests/op")
}
