package source

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
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
	if desc.MediaType.IsIndex() {
		img.Index, err = desc.ImageIndex()
	} else {
		img.Image, err = desc.Image()
	}
	if err != nil {
		return nil, fmt.Errorf("resolving %s: %w", r, err)
	}
	return img, checkPinned(r, img)
}
