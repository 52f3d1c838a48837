package kpaas

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/zstd"

	"kpaas.dev/appliance/internal/bundle"
)

// AgentPath is where kpaas-agent lives on a node (and in the OS image).
const AgentPath = "/usr/bin/kpaas-agent"

// ExtractAgent copies kpaas-agent out of the bundle's OS image into dst:
// the topmost layer that holds usr/bin/kpaas-agent wins (the node layer
// of `kpaas os build`). Every byte is read through a verifying reader.
func ExtractAgent(s *bundle.Store, osEntry bundle.Entry, dst string) error {
	m, err := osManifest(s, osEntry.Descriptor)
	if err != nil {
		return fmt.Errorf("OS image %s: %w", osEntry.Ref, err)
	}
	want := path.Clean(AgentPath[1:])
	for i := len(m.Layers) - 1; i >= 0; i-- {
		l := m.Layers[i]
		found, err := extractFromLayer(s, l, want, dst)
		if err != nil {
			return fmt.Errorf("OS image %s, layer %s: %w", osEntry.Ref, l.Digest, err)
		}
		if found {
			return nil
		}
	}
	return fmt.Errorf("OS image %s has no %s (set agent_binary)", osEntry.Ref, AgentPath)
}

// osManifest reads the image manifest of d: d itself, or the linux/amd64
// entry of an index.
func osManifest(s *bundle.Store, d v1.Descriptor) (*v1.Manifest, error) {
	raw, err := s.ReadManifest(d)
	if err != nil {
		return nil, err
	}
	if bundle.IsIndex(d.MediaType) {
		im, err := v1.ParseIndexManifest(bytes.NewReader(raw))
		if err != nil {
			return nil, err
		}
		for _, c := range im.Manifests {
			if c.Platform == nil || c.Platform.OS == "linux" && c.Platform.Architecture == "amd64" {
				return osManifest(s, c)
			}
		}
		return nil, errors.New("no linux/amd64 manifest")
	}
	return v1.ParseManifest(bytes.NewReader(raw))
}

func extractFromLayer(s *bundle.Store, l v1.Descriptor, want, dst string) (bool, error) {
	rc, err := s.OpenBlob(l.Digest, l.Size)
	if err != nil {
		return false, err
	}
	defer rc.Close()
	r, err := decompress(bufio.NewReaderSize(rc, 1<<16))
	if err != nil {
		return false, err
	}
	defer r.Close()
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if path.Clean(hdr.Name) != want || hdr.Typeflag != tar.TypeReg {
			continue
		}
		f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
		if err != nil {
			return false, err
		}
		if _, err := io.Copy(f, tr); err != nil {
			f.Close()
			return false, err
		}
		// Read the rest so the verifying reader checks the whole blob.
		if _, err := io.Copy(io.Discard, r); err != nil {
			f.Close()
			return false, err
		}
		return true, f.Close()
	}
}

// decompress recognises gzip, zstd or a plain tar by the first bytes.
func decompress(br *bufio.Reader) (io.ReadCloser, error) {
	magic, _ := br.Peek(4)
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		return gzip.NewReader(br)
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		d, err := zstd.NewReader(br)
		if err != nil {
			return nil, err
		}
		return d.IOReadCloser(), nil
	}
	return io.NopCloser(br), nil
}
