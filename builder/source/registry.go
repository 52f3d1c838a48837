package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"kpaas.dev/appliance/internal/ref"
)

// Registry resolves images from registries over the network.
type Registry struct {
	// Rewrite maps an upstream registry to the host that serves it, e.g.
	// "docker.io" → "127.0.0.1:5000" (a pull-through cache or a test
	// registry). The bundle still records the upstream reference.
	Rewrite map[string]string
	// Insecure allows plain HTTP for these hosts (loopback and RFC 1918
	// addresses use HTTP anyway).
	Insecure map[string]bool
	// Keychain provides credentials (default: the docker config file).
	Keychain authn.Keychain
	// Transport is the HTTP transport (default: remote.DefaultTransport).
	Transport http.RoundTripper
}

func (s *Registry) String() string { return "registry" }

// Resolve implements ImageSource.
func (s *Registry) Resolve(ctx context.Context, r ref.Ref) (*Image, error) {
	host := r.Registry
	if h, ok := s.Rewrite[host]; ok {
		host = h
	}
	if host == "docker.io" {
		host = name.DefaultRegistry
	}
	var opts []name.Option
	if s.Insecure[host] {
		opts = append(opts, name.Insecure)
	}
	pinned := ref.Ref{Registry: host, Repository: r.Repository, Tag: r.Tag, Digest: r.Digest}
	pr, err := pinned.Pull(opts...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", r, err)
	}
	kc := s.Keychain
	if kc == nil {
		kc = authn.DefaultKeychain
	}
	ropts := []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(kc)}
	if s.Transport != nil {
		ropts = append(ropts, remote.WithTransport(s.Transport))
	}
	desc, err := remote.Get(pr, ropts...)
	if err != nil {
		var te *transport.Error
		if errors.As(err, &te) && te.StatusCode == http.StatusNotFound {
			return nil, fmt.Errorf("%s: registry %s: %w", r, host, ErrNotFound)
		}
		return nil, fmt.Errorf("resolving %s from registry %s: %w", r, host, err)
	}
	img := &Image{Ref: r, Source: "registry:" + host}
	raw, err := s.rawFetcher(ctx, pr.Context(), kc)
	if err != nil {
		return nil, fmt.Errorf("resolving %s: %w", r, err)
	}
	if desc.MediaType.IsIndex() {
		var idx v1.ImageIndex
		if idx, err = desc.ImageIndex(); err == nil {
			img.Index = rawIndex{idx, raw}
		}
	} else {
		var i v1.Image
		if i, err = desc.Image(); err == nil {
			img.Image = rawImage{i, raw}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("resolving %s: %w", r, err)
	}
	return img, checkPinned(r, img)
}

// Layer blobs are fetched with a plain GET rather than through
// go-containerregistry's verifying reader: the bundle writer hashes every
// blob as it stores it (and checks its size), so a second hash on the way
// in would only cost CPU — about 15% of a bake's wall time.

// rawFetch GETs blobs of one repository through an authenticated transport.
type rawFetch struct {
	ctx    context.Context
	client *http.Client
	base   string // scheme://host/v2/repository
}

func (s *Registry) rawFetcher(ctx context.Context, repo name.Repository, kc authn.Keychain) (*rawFetch, error) {
	auth, err := kc.Resolve(repo)
	if err != nil {
		return nil, err
	}
	base := s.Transport
	if base == nil {
		base = remote.DefaultTransport
	}
	t, err := transport.NewWithContext(ctx, repo.Registry, auth, base, []string{repo.Scope(transport.PullScope)})
	if err != nil {
		return nil, err
	}
	return &rawFetch{
		ctx:    ctx,
		client: &http.Client{Transport: t},
		base:   fmt.Sprintf("%s://%s/v2/%s", repo.Scheme(), repo.RegistryStr(), repo.RepositoryStr()),
	}, nil
}

func (f *rawFetch) blob(h v1.Hash) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(f.ctx, http.MethodGet, f.base+"/blobs/"+h.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return nil, err
	}
	if err := transport.CheckError(resp, http.StatusOK); err != nil {
		resp.Body.Close()
		return nil, err
	}
	return resp.Body, nil
}

type rawImage struct {
	v1.Image
	f *rawFetch
}

func (i rawImage) Layers() ([]v1.Layer, error) {
	ls, err := i.Image.Layers()
	if err != nil {
		return nil, err
	}
	out := make([]v1.Layer, len(ls))
	for n, l := range ls {
		out[n] = rawLayer{l, i.f}
	}
	return out, nil
}

type rawLayer struct {
	v1.Layer
	f *rawFetch
}

func (l rawLayer) Compressed() (io.ReadCloser, error) {
	h, err := l.Digest()
	if err != nil {
		return nil, err
	}
	return l.f.blob(h)
}

type rawIndex struct {
	idx
	f *rawFetch
}

// idx lets rawIndex embed a v1.ImageIndex and still define ImageIndex.
type idx = v1.ImageIndex

func (x rawIndex) Image(h v1.Hash) (v1.Image, error) {
	i, err := x.idx.Image(h)
	if err != nil {
		return nil, err
	}
	return rawImage{i, x.f}, nil
}

func (x rawIndex) ImageIndex(h v1.Hash) (v1.ImageIndex, error) {
	i, err := x.idx.ImageIndex(h)
	if err != nil {
		return nil, err
	}
	return rawIndex{i, x.f}, nil
}
