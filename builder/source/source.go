// Package source resolves what a bundle manifest names into digest-pinned,
// lazily fetched content. Nothing is downloaded by resolving except the
// small documents needed to pin a digest (a registry manifest, a chart
// repository index): blobs are streamed when the bundle writer asks.
//
// Sources:
//
//	Registry  an OCI/Docker registry over HTTPS (auth from the docker config file)
//	Layout    a local OCI image layout folder (annotated with full references)
//	Archive   a docker-archive tarball (`docker save` / `podman save`)
//	Mirror    a folder of the above plus charts/*.tgz and files/: the offline source
//	Chain     tries sources in order
//
// Charts (Helm repository, oci://, local folder or .tgz) and files (http(s)
// URL or local path, checked against sha256) are resolved by ChartFetcher
// and FileFetcher, which consult the Mirror first.
package source

import (
	"context"
	"errors"
	"fmt"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"kpaas.dev/appliance/internal/ref"
)

// ErrNotFound is returned (wrapped) by a source that does not have what
// was asked for; a Chain then tries the next source.
var ErrNotFound = errors.New("not found")

// Image is one resolved image: exactly one of Index and Image is set.
type Image struct {
	Ref    ref.Ref
	Source string // e.g. "registry:quay.io", "layout:/mirror/oci"
	Index  v1.ImageIndex
	Image  v1.Image
}

// Digest is the digest of the resolved manifest or index.
func (i *Image) Digest() (v1.Hash, error) {
	if i.Index != nil {
		return i.Index.Digest()
	}
	return i.Image.Digest()
}

// ImageSource resolves image references.
type ImageSource interface {
	// Resolve pins r to a digest. It returns an error wrapping ErrNotFound
	// when the source does not have r. When r carries a digest, the
	// resolved content must have that digest.
	Resolve(ctx context.Context, r ref.Ref) (*Image, error)
	String() string
}

// Chain tries each source in order.
type Chain []ImageSource

// Resolve implements ImageSource.
func (c Chain) Resolve(ctx context.Context, r ref.Ref) (*Image, error) {
	if len(c) == 0 {
		return nil, fmt.Errorf("%s: no image source configured: %w", r, ErrNotFound)
	}
	var tried []string
	for _, s := range c {
		img, err := s.Resolve(ctx, r)
		if err == nil {
			return img, nil
		}
		if !errors.Is(err, ErrNotFound) {
			return nil, err
		}
		tried = append(tried, s.String())
	}
	return nil, fmt.Errorf("%s: not in %s: %w", r, strings.Join(tried, ", "), ErrNotFound)
}

func (c Chain) String() string {
	var s []string
	for _, x := range c {
		s = append(s, x.String())
	}
	return strings.Join(s, " → ")
}

// checkPinned verifies a resolved digest against a pinned reference.
func checkPinned(r ref.Ref, img *Image) error {
	if r.Digest == "" {
		return nil
	}
	d, err := img.Digest()
	if err != nil {
		return err
	}
	if d.String() != r.Digest {
		return fmt.Errorf("%s: %s has digest %s", r, img.Source, d)
	}
	return nil
}
