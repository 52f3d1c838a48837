// Command mkmirror writes the offline mirror that bundles/demo.yaml is baked
// from: container images assembled (without Docker) from the hello program
// built for linux/amd64 and linux/arm64, under the references the demo
// manifest and chart use. It is the "connected machine" of the demo.
//
//	go run ./bundles/demo/mkmirror -o out/demo-mirror
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"kpaas.dev/appliance/internal/bundle"
)

const version = "0.1.0"

func main() {
	out := flag.String("o", "out/demo-mirror", "mirror folder to write")
	flag.Parse()
	if err := run(context.Background(), *out); err != nil {
		fmt.Fprintln(os.Stderr, "mkmirror:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, out string) error {
	here, err := moduleDir()
	if err != nil {
		return err
	}
	base, err := layer(map[string]file{
		"etc/passwd": {data: []byte("root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n"), mode: 0o644},
		"etc/group":  {data: []byte("root:x:0:\nnobody:x:65534:\n"), mode: 0o644},
	})
	if err != nil {
		return err
	}
	bins := map[string]v1.Layer{}
	for _, arch := range []string{"amd64", "arm64"} {
		b, err := build(here, arch)
		if err != nil {
			return err
		}
		bins[arch], err = layer(map[string]file{"hello": {data: b, mode: 0o755}})
		if err != nil {
			return err
		}
	}

	var hello []mutate.IndexAddendum
	for _, arch := range []string{"amd64", "arm64"} {
		img, err := image(arch, []string{"/hello"}, base, bins[arch])
		if err != nil {
			return err
		}
		hello = append(hello, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}})
	}
	index := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), hello...)
	probe, err := image("amd64", []string{"/hello", "-probe"}, base, bins["amd64"])
	if err != nil {
		return err
	}

	s, err := bundle.Create(filepath.Join(out, "oci"))
	if err != nil {
		return err
	}
	w := s.NewWriter()
	di, err := w.WriteIndex(ctx, index, nil)
	if err != nil {
		return err
	}
	dp, err := w.WriteImage(ctx, probe)
	if err != nil {
		return err
	}
	if err := s.SetEntries([]v1.Descriptor{
		bundle.Annotate(di, bundle.KindImage, "docker.io/kpaas/hello:"+version),
		bundle.Annotate(dp, bundle.KindImage, "docker.io/kpaas/hello-probe:"+version),
	}); err != nil {
		return err
	}
	fmt.Printf("mirror %s: docker.io/kpaas/hello:%s (%s), docker.io/kpaas/hello-probe:%s (%s)\n", out, version, di.Digest, version, dp.Digest)
	return nil
}

// moduleDir is the folder of the hello program.
func moduleDir() (string, error) {
	out, err := exec.Command("go", "list", "-f", "{{.Dir}}", "kpaas.dev/appliance/bundles/demo/hello").Output()
	if err != nil {
		return "", fmt.Errorf("locating the hello program: %w", err)
	}
	return string(bytes.TrimSpace(out)), nil
}

// build compiles hello for linux/arch, reproducibly.
func build(dir, arch string) ([]byte, error) {
	tmp, err := os.MkdirTemp("", "kpaas-hello-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, "hello")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -buildid= -X main.version="+version, "-o", bin, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("building hello for %s: %v\n%s", arch, err, out)
	}
	return os.ReadFile(bin)
}

type file struct {
	data []byte
	mode int64
}

// layer makes a gzip tar layer with fixed timestamps and owners.
func layer(files map[string]file) (v1.Layer, error) {
	var buf bytes.Buffer
	gz, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	tw := tar.NewWriter(gz)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		f := files[n]
		hdr := &tar.Header{Name: n, Mode: f.mode, Size: int64(len(f.data)), ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := gz.Close(); err != nil {
		return nil, err
	}
	// tarball reads the gzip stream back for the layer's diff ID (the
	// digest of the uncompressed tar, which the config lists and
	// containerd checks on extraction) and keeps these bytes as the blob.
	gzBytes := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(gzBytes)), nil },
		tarball.WithMediaType(types.OCILayer))
}

func image(arch string, entrypoint []string, layers ...v1.Layer) (v1.Image, error) {
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.AppendLayers(img, layers...)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch
	cf.Created = v1.Time{Time: time.Unix(0, 0).UTC()}
	cf.Config.Entrypoint = entrypoint
	cf.Config.User = "65534"
	cf.Config.ExposedPorts = map[string]struct{}{"8080/tcp": {}}
	return mutate.ConfigFile(img, cf)
}
