package seed

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/sirupsen/logrus"

	"kpaas.dev/appliance/internal/bundle"
)

// The benchmarks compare the seed with the reference registry
// implementation, distribution/distribution v3 (in process, filesystem
// storage, no cache, no auth), serving the same image to the same client
// (go-containerregistry's remote package over one shared transport).
//
//	go test ./internal/seed -run '^$' -bench . -benchtime 3x

const benchRef = "docker.io/library/bench:1.0"

// benchPair is the same image behind both registries.
type benchPair struct {
	seed, dist string // host:port
	img        v1.Image
	digest     v1.Hash
	bytes      int64 // manifest + config + layers
	transport  *http.Transport
}

func newBenchPair(b *testing.B, layers int, layerSize int64) *benchPair {
	b.Helper()
	ctx := context.Background()
	img := ociImage(b, layers, layerSize, "amd64", "")
	p := &benchPair{img: img, digest: must(img.Digest())(b)}
	m := must(img.Manifest())(b)
	p.bytes = must(img.Size())(b) + m.Config.Size
	for _, l := range m.Layers {
		p.bytes += l.Size
	}

	// The seed, over a bundle.
	s := must(bundle.Create(b.TempDir()))(b)
	d := must(s.NewWriter().WriteImage(ctx, img))(b)
	if err := s.SetEntries([]v1.Descriptor{bundle.Annotate(d, bundle.KindImage, benchRef)}); err != nil {
		b.Fatal(err)
	}
	seedSrv := httptest.NewServer(must(New(s))(b))
	b.Cleanup(seedSrv.Close)
	p.seed = strings.TrimPrefix(seedSrv.URL, "http://")

	// distribution, with the same image pushed into it.
	logrus.SetOutput(io.Discard)
	logrus.SetLevel(logrus.ErrorLevel)
	cfg := &configuration.Configuration{
		Storage: configuration.Storage{
			"filesystem":  configuration.Parameters{"rootdirectory": b.TempDir()},
			"maintenance": configuration.Parameters{"uploadpurging": map[any]any{"enabled": false}},
		},
	}
	cfg.HTTP.Secret = "benchmark"
	app := handlers.NewApp(ctx, cfg)
	distSrv := httptest.NewServer(app)
	b.Cleanup(distSrv.Close)
	p.dist = strings.TrimPrefix(distSrv.URL, "http://")
	if err := remote.Write(must(name.ParseReference(p.dist+"/"+benchRef, name.Insecure))(b), img); err != nil {
		b.Fatalf("pushing to distribution: %v", err)
	}

	p.transport = http.DefaultTransport.(*http.Transport).Clone()
	p.transport.MaxIdleConns = 256
	p.transport.MaxIdleConnsPerHost = 128
	b.Cleanup(p.transport.CloseIdleConnections)
	// Warm both: the seed hashes each blob once before serving it.
	for _, host := range []string{p.seed, p.dist} {
		if err := p.pull(ctx, host); err != nil {
			b.Fatal(err)
		}
	}
	return p
}

// pull fetches the manifest, config and every layer from host, verifying
// digests as go-containerregistry does.
func (p *benchPair) pull(ctx context.Context, host string) error {
	ref, err := name.ParseReference(host+"/"+benchRef, name.Insecure)
	if err != nil {
		return err
	}
	img, err := remote.Image(ref, remote.WithContext(ctx), remote.WithTransport(p.transport))
	if err != nil {
		return fmt.Errorf("%s: %w", host, err)
	}
	if d, err := img.Digest(); err != nil || d != p.digest {
		return fmt.Errorf("%s: digest %s, %v", host, d, err)
	}
	if _, err := img.RawConfigFile(); err != nil {
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", host, err)
		}
	}
	return nil
}

// BenchmarkPullThroughput pulls a 4 × 8 MiB image from each registry in
// turn (so both see the same machine load) and reports each one's MB/s
// and the ratio seed/distribution (above 1: the seed is faster).
func BenchmarkPullThroughput(b *testing.B) {
	p := newBenchPair(b, 4, 8<<20)
	ctx := context.Background()
	var seedTime, distTime time.Duration
	n := 0
	for b.Loop() {
		for _, side := range []struct {
			host string
			acc  *time.Duration
		}{{p.seed, &seedTime}, {p.dist, &distTime}} {
			start := time.Now()
			if err := p.pull(ctx, side.host); err != nil {
				b.Fatal(err)
			}
			*side.acc += time.Since(start)
		}
		n++
	}
	mbps := func(d time.Duration) float64 { return float64(p.bytes) * float64(n) / d.Seconds() / 1e6 }
	b.ReportMetric(mbps(seedTime), "seed-MB/s")
	b.ReportMetric(mbps(distTime), "distribution-MB/s")
	b.ReportMetric(distTime.Seconds()/seedTime.Seconds(), "seed/distribution-throughput")
}

// BenchmarkManifestP99 has 64 pullers fetch the manifest by tag at once
// (20 requests each per round) from each registry in turn, and reports
// each one's 99th percentile latency and the ratio seed/distribution
// (below 1: the seed answers faster).
func BenchmarkManifestP99(b *testing.B) {
	const pullers, perPuller = 64, 20
	p := newBenchPair(b, 1, 1024)
	client := &http.Client{Transport: p.transport, Timeout: 30 * time.Second}
	round := func(host string) ([]time.Duration, error) {
		url := "http://" + host + "/v2/" + strings.TrimSuffix(benchRef, ":1.0") + "/manifests/1.0"
		lat := make([]time.Duration, pullers*perPuller)
		var wg sync.WaitGroup
		errs := make(chan error, pullers)
		for g := range pullers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range perPuller {
					req, _ := http.NewRequest(http.MethodGet, url, nil)
					req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json")
					start := time.Now()
					resp, err := client.Do(req)
					if err == nil {
						_, err = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if err == nil && resp.StatusCode != http.StatusOK {
							err = fmt.Errorf("%s: status %d", host, resp.StatusCode)
						}
					}
					lat[g*perPuller+i] = time.Since(start)
					if err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		return lat, <-errs
	}
	var seedLat, distLat []time.Duration
	for b.Loop() {
		for _, side := range []struct {
			host string
			acc  *[]time.Duration
		}{{p.seed, &seedLat}, {p.dist, &distLat}} {
			lat, err := round(side.host)
			if err != nil {
				b.Fatal(err)
			}
			*side.acc = append(*side.acc, lat...)
		}
	}
	p99 := func(l []time.Duration) time.Duration {
		slices.Sort(l)
		return l[(len(l)*99)/100]
	}
	sp, dp := p99(seedLat), p99(distLat)
	b.ReportMetric(float64(sp.Microseconds())/1000, "seed-p99-ms")
	b.ReportMetric(float64(dp.Microseconds())/1000, "distribution-p99-ms")
	b.ReportMetric(sp.Seconds()/dp.Seconds(), "seed/distribution-p99")
}
