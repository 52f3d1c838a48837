// Command benchgen pushes the image set of the bake benchmark (hack/bench.sh,
// docs/benchmarks.md) to a registry and writes down what it pushed.
//
// The set is modelled on a platform bundle as peer tools see one: 24
// references, bench/svc01..20:v1 (single-arch linux/amd64) and
// bench/multi01..04:v1 (OCI indexes of linux/amd64 + linux/arm64), 28
// platform images in all. Layers are tars of one file of ChaCha8 data
// (incompressible), gzip level 1, with OCI media types:
//
//   - 3 shared base layers of 40 MiB: base-os in 18 platform images,
//     base-runtime in 10, base-tools in 6;
//   - per index, one layer of 15/25/35/45 MiB that both platforms share;
//   - per platform image, one app layer of 5–60 MiB (994 MiB in all) and
//     two small layers (4 KiB and 20–520 KiB).
//
// At -scale 1 that is about 1.21 GiB of unique blobs; -scale multiplies the
// base, index and app layers (the small ones stay), so -scale small (0.08)
// gives about 100 MiB. The same scale gives the same digests.
//
// -extra N adds N single-arch references, bench/img001..N:v1 (platform
// images 28.., built like svc01..20 with the base layers and app layer size
// of image p mod 28, but data of their own), for benchmarks that need many
// images (the re-push of hack/bench-registry.sh uses 76: 100 references).
//
//	benchgen -registry 127.0.0.1:5055 [-scale full|small|0.5] [-extra N] [-out set.json] [-refs refs.txt]
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"
)

const mib = 1 << 20

// appMiB are the sizes of the 28 unique app layers (994 MiB in all), in
// platform-image order: svc01..svc20, then multi01..04 amd64, arm64.
var appMiB = [28]int{5, 38, 23, 60, 37, 22, 55, 36, 21, 54, 39, 20, 53, 38, 19, 52, 37, 18, 55, 36, 17, 54, 35, 16, 53, 34, 15, 52}

// indexMiB are the sizes of the layers each index's two platforms share.
var indexMiB = [4]int{15, 25, 35, 45}

// bases are the shared base layers and which platform images (by number,
// 0..27) use them: base-os 18, base-runtime 10, base-tools 6.
var bases = []struct {
	name  string
	users func(p int) bool
}{
	{"base-os", func(p int) bool { return p < 14 || (p >= 20 && p < 24) }},
	{"base-runtime", func(p int) bool { return (p >= 8 && p < 16) || p == 24 || p == 25 }},
	{"base-tools", func(p int) bool { return p >= 14 && p < 20 }},
}

const baseMiB = 40

// Set is what benchgen writes to -out.
type Set struct {
	Registry          string   `json:"registry"`
	Scale             float64  `json:"scale"`
	Refs              []string `json:"refs"`
	PlatformManifests int      `json:"platformManifests"`
	UniqueBlobs       int      `json:"uniqueBlobs"`
	UniqueBytes       int64    `json:"uniqueBytes"`
	LogicalBytes      int64    `json:"logicalBytes"` // summed per reference, each blob once per reference
	LargestBlob       int64    `json:"largestBlob"`
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "benchgen:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("benchgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	registry := fs.String("registry", "", "registry to push to, HOST:PORT (plain HTTP)")
	scaleFlag := fs.String("scale", "full", "size factor of the big layers: full (1), small (0.08) or a number")
	out := fs.String("out", "", "write the set description (JSON) here")
	refsOut := fs.String("refs", "", "write the references, one a line, here")
	jobs := fs.Int("jobs", 2, "images generated and pushed at once")
	extra := fs.Int("extra", 0, "add this many single-arch references bench/imgNNN:v1 (at most 900)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *registry == "" || fs.NArg() > 0 {
		return errors.New("usage: benchgen -registry HOST:PORT [-scale full|small|N] [-extra N] [-out FILE] [-refs FILE]")
	}
	if *extra < 0 || *extra > 900 {
		return fmt.Errorf("-extra %d: want 0..900", *extra)
	}
	scale, err := parseScale(*scaleFlag)
	if err != nil {
		return err
	}
	start := time.Now()
	set, err := push(ctx, *registry, scale, *extra, *jobs)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "benchgen: pushed %d references (%d platform images, %d unique blobs, %.1f MiB unique, %.1f MiB logical) to %s in %s\n",
		len(set.Refs), set.PlatformManifests, set.UniqueBlobs, float64(set.UniqueBytes)/mib, float64(set.LogicalBytes)/mib,
		*registry, time.Since(start).Round(time.Millisecond))
	if *out != "" {
		b, err := json.MarshalIndent(set, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(*out, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	var refs bytes.Buffer
	for _, r := range set.Refs {
		fmt.Fprintln(&refs, r)
	}
	if *refsOut != "" {
		return os.WriteFile(*refsOut, refs.Bytes(), 0o644)
	}
	_, err = stdout.Write(refs.Bytes())
	return err
}

func parseScale(s string) (float64, error) {
	switch s {
	case "full":
		return 1, nil
	case "small":
		return 0.08, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f <= 0 || f > 10 {
		return 0, fmt.Errorf("-scale %q: want full, small or a number in (0, 10]", s)
	}
	return f, nil
}

// push builds and pushes every reference and sums up the set.
func push(ctx context.Context, registry string, scale float64, extra, jobs int) (*Set, error) {
	scaled := func(m int) int64 { return max(4096, int64(float64(m)*scale*mib)) }
	// The shared layers are built first, in parallel; the rest per image.
	shared := map[string]*layer{}
	var mu sync.Mutex
	var sg errgroup.Group
	sg.SetLimit(max(1, jobs))
	build := func(name string, size int64) {
		sg.Go(func() error {
			l := newLayer(name, size)
			mu.Lock()
			defer mu.Unlock()
			shared[name] = l
			return nil
		})
	}
	for _, b := range bases {
		build(b.name, scaled(baseMiB))
	}
	for k, m := range indexMiB {
		build(fmt.Sprintf("index-%02d", k), scaled(m))
	}
	_ = sg.Wait()
	// platformImage builds platform image p (0..27, then the extra ones).
	platformImage := func(p int, arch, indexLayer string) (v1.Image, error) {
		var ls []v1.Layer
		for _, b := range bases {
			if b.users(p % len(appMiB)) {
				ls = append(ls, shared[b.name])
			}
		}
		if indexLayer != "" {
			ls = append(ls, shared[indexLayer])
		}
		ls = append(ls,
			newLayer(fmt.Sprintf("app-%02d", p), scaled(appMiB[p%len(appMiB)])),
			newLayer(fmt.Sprintf("small-%02d", p), 4096),
			newLayer(fmt.Sprintf("extra-%02d", p), int64(20+(p*37)%501)*1024),
		)
		img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), ls...)
		if err != nil {
			return nil, err
		}
		img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
		cf, err := img.ConfigFile()
		if err != nil {
			return nil, err
		}
		cf = cf.DeepCopy()
		cf.OS, cf.Architecture = "linux", arch
		cf.Config.Labels = map[string]string{"dev.kpaas.bench.image": strconv.Itoa(p)}
		return mutate.ConfigFile(img, cf)
	}

	type built struct {
		ref  string
		img  v1.Image      // single-arch
		idx  v1.ImageIndex // or an index
		imgs []v1.Image    // the platform images, for the sums
	}
	results := make([]built, 24+extra)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(1, jobs))
	for i := range 24 + extra {
		g.Go(func() error {
			var b built
			var err error
			if i >= 24 {
				b.ref = fmt.Sprintf("%s/bench/img%03d:v1", registry, i-23)
				if b.img, err = platformImage(i+4, "amd64", ""); err != nil {
					return err
				}
				b.imgs = []v1.Image{b.img}
			} else if i < 20 {
				b.ref = fmt.Sprintf("%s/bench/svc%02d:v1", registry, i+1)
				if b.img, err = platformImage(i, "amd64", ""); err != nil {
					return err
				}
				b.imgs = []v1.Image{b.img}
			} else {
				k := i - 20
				b.ref = fmt.Sprintf("%s/bench/multi%02d:v1", registry, k+1)
				idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
				for j, arch := range []string{"amd64", "arm64"} {
					img, err := platformImage(20+2*k+j, arch, fmt.Sprintf("index-%02d", k))
					if err != nil {
						return err
					}
					b.imgs = append(b.imgs, img)
					idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
						Add:        img,
						Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}},
					})
				}
				b.idx = idx
			}
			tag, err := name.NewTag(b.ref, name.Insecure)
			if err != nil {
				return err
			}
			opts := []remote.Option{remote.WithContext(gctx), remote.WithJobs(2)}
			if b.idx != nil {
				err = remote.WriteIndex(tag, b.idx, opts...)
			} else {
				err = remote.Write(tag, b.img, opts...)
			}
			if err != nil {
				return fmt.Errorf("pushing %s: %w", b.ref, err)
			}
			results[i] = b
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}

	set := &Set{Registry: registry, Scale: scale}
	unique := map[v1.Hash]int64{}
	for _, b := range results {
		set.Refs = append(set.Refs, b.ref)
		seen := map[v1.Hash]int64{}
		if b.idx != nil {
			if err := addRaw(seen, b.idx); err != nil {
				return nil, err
			}
		}
		for _, img := range b.imgs {
			set.PlatformManifests++
			if err := addImage(seen, img); err != nil {
				return nil, err
			}
		}
		for h, n := range seen {
			set.LogicalBytes += n
			unique[h] = n
		}
	}
	for _, n := range unique {
		set.UniqueBlobs++
		set.UniqueBytes += n
		set.LargestBlob = max(set.LargestBlob, n)
	}
	return set, nil
}

// addRaw records the digest and size of an index or manifest.
func addRaw(m map[v1.Hash]int64, x interface{ RawManifest() ([]byte, error) }) error {
	raw, err := x.RawManifest()
	if err != nil {
		return err
	}
	h, n, err := v1.SHA256(bytes.NewReader(raw))
	if err != nil {
		return err
	}
	m[h] = n
	return nil
}

// addImage records an image's manifest, config and layers.
func addImage(m map[v1.Hash]int64, img v1.Image) error {
	if err := addRaw(m, img); err != nil {
		return err
	}
	mf, err := img.Manifest()
	if err != nil {
		return err
	}
	m[mf.Config.Digest] = mf.Config.Size
	for _, l := range mf.Layers {
		m[l.Digest] = l.Size
	}
	return nil
}

// layer is a gzipped tar holding one file of size bytes of ChaCha8 data
// seeded by the layer's name, kept in memory.
type layer struct {
	gz             []byte
	digest, diffID v1.Hash
}

var _ v1.Layer = (*layer)(nil)

func newLayer(name string, size int64) *layer {
	var gzBuf bytes.Buffer
	diffID := sha256.New()
	zw, _ := gzip.NewWriterLevel(&gzBuf, gzip.BestSpeed)
	tw := tar.NewWriter(io.MultiWriter(zw, diffID))
	must(tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeReg,
		Name:     "bench/" + name + ".bin",
		Mode:     0o644,
		Size:     size,
		ModTime:  time.Unix(0, 0),
		Format:   tar.FormatUSTAR,
	}))
	rng := rand.NewChaCha8(sha256.Sum256([]byte("kpaas-bench/" + name)))
	buf := make([]byte, min(size, mib))
	for left := size; left > 0; {
		n := min(left, int64(len(buf)))
		_, _ = rng.Read(buf[:n])
		_, err := tw.Write(buf[:n])
		must(err)
		left -= n
	}
	must(tw.Close())
	must(zw.Close())
	gzSum := sha256.Sum256(gzBuf.Bytes())
	return &layer{
		gz:     gzBuf.Bytes(),
		digest: v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", gzSum)},
		diffID: v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", diffID.Sum(nil))},
	}
}

// must panics on errors that writing to memory cannot produce.
func must(err error) {
	if err != nil {
		panic(err)
	}
}

func (l *layer) Digest() (v1.Hash, error) { return l.digest, nil }
func (l *layer) DiffID() (v1.Hash, error) { return l.diffID, nil }
func (l *layer) Size() (int64, error)     { return int64(len(l.gz)), nil }
func (l *layer) MediaType() (types.MediaType, error) {
	return types.OCILayer, nil
}
func (l *layer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.gz)), nil
}
func (l *layer) Uncompressed() (io.ReadCloser, error) {
	return gzip.NewReader(bytes.NewReader(l.gz))
}
