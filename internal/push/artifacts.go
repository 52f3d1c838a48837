package push

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"

	"kpaas.dev/appliance/internal/bundle"
	"kpaas.dev/appliance/internal/retry"
)

// artifacts pushes manifest trees: blobs first, then each manifest once
// everything it references is in place, then the tag.
type artifacts struct {
	c     *client
	store *bundle.Store
	blobs *blobs
	st    *stats
	retry retry.Policy

	mu        sync.Mutex
	manifests map[string]*flight // repo@digest pushed (or in progress) by this push
}

// push sends one artifact: its manifest tree by digest, then its tag.
func (a *artifacts) push(ctx context.Context, j job) error {
	d := j.entry.Descriptor
	if err := a.manifest(ctx, j.target.Repo, d); err != nil {
		return err
	}
	if j.target.Tag == "" {
		return nil
	}
	// The tag last, and only when it does not already point at the digest.
	var cur string
	if err := a.do(ctx, func(ctx context.Context) (err error) {
		cur, err = a.c.headManifest(ctx, j.target.Repo, j.target.Tag, pushScope(j.target.Repo))
		return err
	}); err != nil {
		return fmt.Errorf("checking tag %s: %w", j.target.Tag, err)
	}
	if cur == d.Digest.String() {
		return nil
	}
	raw, mt, err := a.read(d)
	if err != nil {
		return err
	}
	if err := a.do(ctx, func(ctx context.Context) error {
		return a.c.putManifest(ctx, j.target.Repo, j.target.Tag, mt, raw)
	}); err != nil {
		return fmt.Errorf("tagging %s as %s: %w", d.Digest, j.target.Tag, err)
	}
	a.st.tags.Add(1)
	return nil
}

func (a *artifacts) do(ctx context.Context, fn func(ctx context.Context) error) error {
	first := true
	return retry.Do(ctx, a.retry, func(ctx context.Context) error {
		if !first {
			a.st.retries.Add(1)
		}
		first = false
		return fn(ctx)
	})
}

// manifest makes the manifest or index d present in repo by digest, once
// per push even when several artifacts share it.
func (a *artifacts) manifest(ctx context.Context, repo string, d v1.Descriptor) error {
	key := repo + "@" + d.Digest.String()
	a.mu.Lock()
	if f, ok := a.manifests[key]; ok {
		a.mu.Unlock()
		select {
		case <-f.done:
			return f.err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	f := &flight{done: make(chan struct{})}
	a.manifests[key] = f
	a.mu.Unlock()
	f.err = a.manifestOnce(ctx, repo, d)
	if f.err != nil {
		a.mu.Lock()
		delete(a.manifests, key)
		a.mu.Unlock()
	}
	close(f.done)
	return f.err
}

func (a *artifacts) manifestOnce(ctx context.Context, repo string, d v1.Descriptor) error {
	// Present by digest: the registry accepted it, so everything below it
	// is there too.
	var cur string
	if err := a.do(ctx, func(ctx context.Context) (err error) {
		cur, err = a.c.headManifest(ctx, repo, d.Digest.String(), pushScope(repo))
		return err
	}); err != nil {
		return fmt.Errorf("checking manifest %s: %w", d.Digest, err)
	}
	if cur != "" {
		a.st.manifestsSkipped.Add(1)
		return nil
	}
	raw, mt, err := a.read(d)
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	switch {
	case bundle.IsIndex(mt):
		im, err := v1.ParseIndexManifest(bytes.NewReader(raw))
		if err != nil {
			return fmt.Errorf("parsing index %s: %w", d.Digest, err)
		}
		for _, c := range im.Manifests {
			if !bundle.IsIndex(c.MediaType) && !bundle.IsManifest(c.MediaType) {
				return fmt.Errorf("index %s: child %s has unsupported media type %q", d.Digest, c.Digest, c.MediaType)
			}
			g.Go(func() error { return a.manifest(gctx, repo, c) })
		}
	case bundle.IsManifest(mt):
		m, err := v1.ParseManifest(bytes.NewReader(raw))
		if err != nil {
			return fmt.Errorf("parsing manifest %s: %w", d.Digest, err)
		}
		for _, b := range append([]v1.Descriptor{m.Config}, m.Layers...) {
			g.Go(func() error { return a.blobs.ensure(gctx, repo, b) })
		}
	default:
		return fmt.Errorf("manifest %s: unsupported media type %q", d.Digest, mt)
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if err := a.do(ctx, func(ctx context.Context) error {
		return a.c.putManifest(ctx, repo, d.Digest.String(), mt, raw)
	}); err != nil {
		return fmt.Errorf("putting manifest %s: %w", d.Digest, err)
	}
	a.st.manifestsSent.Add(1)
	return nil
}

// read returns the verified bytes of the manifest d and its media type
// (the document's own mediaType field wins over the descriptor's).
func (a *artifacts) read(d v1.Descriptor) ([]byte, types.MediaType, error) {
	raw, err := a.store.ReadManifest(d)
	if err != nil {
		return nil, "", fmt.Errorf("reading manifest %s from the bundle: %w", d.Digest, err)
	}
	var head struct {
		MediaType types.MediaType `json:"mediaType"`
	}
	mt := d.MediaType
	if json.Unmarshal(raw, &head) == nil && head.MediaType != "" {
		mt = head.MediaType
	}
	return raw, mt, nil
}
