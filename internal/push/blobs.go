package push

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"kpaas.dev/appliance/internal/bundle"
	"kpaas.dev/appliance/internal/retry"
)

// blobs makes sure blobs are present in target repositories, each at most
// once per push:
//
//   - a (digest, repo) pair is handled by one goroutine; others wait for it;
//   - HEAD first: a blob the repo already has is skipped (this is what makes
//     an interrupted push resume without re-sending what arrived);
//   - a blob that several repositories need is uploaded into one of them
//     (its home: the first in bundle order, the same in every run) and
//     mounted into the others (POST ?mount=&from=), never sent twice;
//   - otherwise it is uploaded, streamed from the bundle's verifying reader:
//     one PUT below the chunk threshold, PATCH chunks above it.
//
// At most jobs requests that move or probe blobs run at once.
type blobs struct {
	c         *client
	store     *bundle.Store
	sem       chan struct{}
	policy    retry.Policy
	threshold int64 // chunked upload from this size
	chunk     int64
	st        *stats

	home map[v1.Hash]string // first repository, in bundle order, that needs the blob

	mu    sync.Mutex
	pairs map[pairKey]*flight // (digest, repo) in progress or done
}

type pairKey struct {
	h    v1.Hash
	repo string
}

type flight struct {
	done chan struct{}
	err  error
}

func newBlobs(c *client, store *bundle.Store, o *Options, st *stats) *blobs {
	return &blobs{
		c: c, store: store, sem: make(chan struct{}, o.Jobs), policy: o.Retry,
		threshold: o.ChunkThreshold, chunk: o.ChunkSize, st: st,
		pairs: map[pairKey]*flight{}, home: map[v1.Hash]string{},
	}
}

// ensure makes blob d present in repo.
func (b *blobs) ensure(ctx context.Context, repo string, d v1.Descriptor) error {
	k := pairKey{d.Digest, repo}
	for waited := false; ; waited = true {
		b.mu.Lock()
		f, ok := b.pairs[k]
		if !ok {
			f = &flight{done: make(chan struct{})}
			b.pairs[k] = f
			b.mu.Unlock()
			f.err = b.place(ctx, repo, d)
			if f.err != nil {
				b.mu.Lock()
				delete(b.pairs, k) // a later artifact may try again
				b.mu.Unlock()
			}
			close(f.done)
			return f.err
		}
		b.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		// The owner's attempt runs under the owner's artifact: when that
		// artifact fails for a reason of its own (another, corrupt blob),
		// its context is cancelled under this blob too. Try once ourselves
		// before failing an artifact whose own content may be fine.
		if f.err == nil || waited || ctx.Err() != nil {
			return f.err
		}
	}
}

// plan records, for every blob below the jobs' artifacts, its home: the
// first repository in bundle order that needs it.
func (b *blobs) plan(jobs []job) error {
	for _, j := range jobs {
		err := b.store.Walk(j.entry.Descriptor, func(n bundle.Node) error {
			d := n.Descriptor
			if bundle.IsIndex(d.MediaType) || bundle.IsManifest(d.MediaType) {
				return nil
			}
			if _, ok := b.home[d.Digest]; !ok {
				b.home[d.Digest] = j.target.Repo
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("reading %s: %w", j.entry.Ref, err)
		}
	}
	return nil
}

// acquire takes a worker slot.
func (b *blobs) acquire(ctx context.Context) error {
	select {
	case b.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (b *blobs) release() { <-b.sem }

// withSlot runs fn holding a worker slot, under the retry policy.
func (b *blobs) withSlot(ctx context.Context, fn func(ctx context.Context) error) error {
	if err := b.acquire(ctx); err != nil {
		return err
	}
	defer b.release()
	return b.retry(ctx, fn)
}

func (b *blobs) retry(ctx context.Context, fn func(ctx context.Context) error) error {
	first := true
	return retry.Do(ctx, b.policy, func(ctx context.Context) error {
		if !first {
			b.st.retries.Add(1)
		}
		first = false
		return fn(ctx)
	})
}

// place decides between skip, mount and upload for one (digest, repo).
func (b *blobs) place(ctx context.Context, repo string, d v1.Descriptor) error {
	var have bool
	err := b.withSlot(ctx, func(ctx context.Context) (err error) {
		have, err = b.c.headBlob(ctx, repo, d.Digest)
		return err
	})
	if err != nil {
		return fmt.Errorf("checking blob %s: %w", d.Digest, err)
	}
	if have {
		b.st.skipped(d.Size)
		return nil
	}
	if !b.store.HasBlob(d.Digest, d.Size) && len(d.URLs) > 0 {
		// A non-distributable (foreign) layer the bundle does not carry:
		// clients fetch it from its URLs, the registry need not hold it.
		b.st.foreign.Add(1)
		return nil
	}
	// A blob shared by several repositories is only ever uploaded into
	// the first of them in bundle order (its home), and mounted into the
	// others from there. The home is the same in every run, so a resumed
	// push finds what an interrupted one sent.
	if home := b.home[d.Digest]; home != "" && home != repo {
		if err := b.ensure(ctx, home, d); err != nil {
			return err
		}
		return b.mountOrUpload(ctx, repo, home, d)
	}
	return b.upload(ctx, repo, d, "")
}

// mountOrUpload mounts d from repo from; when the registry declines, it
// uploads into the session the registry opened.
func (b *blobs) mountOrUpload(ctx context.Context, repo, from string, d v1.Descriptor) error {
	var mounted bool
	var loc string
	err := b.withSlot(ctx, func(ctx context.Context) (err error) {
		mounted, loc, err = b.c.mount(ctx, repo, from, d.Digest)
		return err
	})
	if err != nil {
		return fmt.Errorf("mounting blob %s from %s: %w", d.Digest, from, err)
	}
	if mounted {
		b.st.mounted(d.Size)
		return nil
	}
	return b.upload(ctx, repo, d, loc)
}

// upload sends d into repo (into session loc when not empty), retrying
// transient failures from the start: after a failure it asks HEAD first,
// in case the blob arrived before the answer was lost.
func (b *blobs) upload(ctx context.Context, repo string, d v1.Descriptor, loc string) error {
	if err := b.acquire(ctx); err != nil {
		return err
	}
	defer b.release()
	attempt := 0
	var landed bool
	err := b.retry(ctx, func(ctx context.Context) error {
		attempt++
		if attempt > 1 {
			have, err := b.c.headBlob(ctx, repo, d.Digest)
			if err != nil {
				return err
			}
			if have {
				landed = true
				return nil
			}
			loc = ""
		}
		if loc == "" {
			var err error
			if loc, err = b.c.startUpload(ctx, repo); err != nil {
				return err
			}
		}
		err := b.send(ctx, repo, loc, d)
		loc = "" // a session is not reused after a failure
		return err
	})
	if err != nil {
		return fmt.Errorf("uploading blob %s (%d bytes): %w", d.Digest, d.Size, err)
	}
	if landed {
		b.st.skipped(d.Size)
	} else {
		b.st.sent(d.Size)
	}
	return nil
}

// send streams the blob from the bundle into the upload session at loc.
func (b *blobs) send(ctx context.Context, repo, loc string, d v1.Descriptor) error {
	rc, err := b.store.OpenBlob(d.Digest, d.Size)
	if err != nil {
		return err // a missing blob is not transient
	}
	defer rc.Close()
	body := &verifiedBody{r: rc, left: d.Size}
	fail := func(err error) error {
		if body.err != nil { // the bundle's bytes are bad: never retry
			return fmt.Errorf("reading blob %s from the bundle: %w", d.Digest, body.err)
		}
		return err
	}
	if d.Size < b.threshold || b.chunk <= 0 {
		return fail(b.c.putBlob(ctx, repo, loc, d.Digest, d.Size, body))
	}
	for start := int64(0); start < d.Size; {
		n := min(b.chunk, d.Size-start)
		next, err := b.c.patchChunk(ctx, repo, loc, start, n, io.LimitReader(body, n))
		if err != nil {
			return fail(err)
		}
		b.st.chunks.Add(1)
		loc, start = next, start+n
	}
	return fail(b.c.finishUpload(ctx, repo, loc, d.Digest))
}

// verifiedBody streams a blob of known size from the bundle's verifying
// reader and checks the digest before handing over the last bytes: when
// the content is wrong, the request body ends short with an error, so the
// registry never receives a complete wrong blob. It never holds more than
// the caller's buffer.
type verifiedBody struct {
	r    io.Reader
	left int64
	err  error // a verification or read error from the bundle
}

func (v *verifiedBody) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	if v.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > v.left {
		p = p[:v.left]
	}
	n, err := v.r.Read(p)
	v.left -= int64(n)
	if err == io.EOF && v.left > 0 {
		err = io.ErrUnexpectedEOF
	}
	if err == nil && v.left == 0 {
		// Reach the verifying reader's EOF, where it checks the digest.
		var one [1]byte
		_, err = v.r.Read(one[:])
		if err == io.EOF {
			err = nil
		} else if err == nil {
			err = errors.New("blob is longer than its descriptor says")
		}
	}
	if err != nil && err != io.EOF {
		v.err = err
		return 0, err // withhold the last bytes of a bad blob
	}
	return n, err
}
