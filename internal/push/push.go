// Package push copies the images and Helm charts of a bundle into a
// registry — Harbor or any OCI distribution registry — preserving every
// digest.
//
// Push is one operation with one Options struct; the CLI (kpaas push) and
// the agent's harbor phase only fill Options. Its steps, in order:
//
//  1. validate the options (all problems reported together);
//  2. plan: map each image and chart entry's full reference to a target
//     repository and tag (see Mapping), refusing two different artifacts at
//     one target;
//  3. connect: find the registry's scheme and auth challenge (GET /v2/);
//  4. projects (Harbor only): create the missing projects, reuse existing
//     ones;
//  5. artifacts, several at once: for each, the manifest tree bottom-up —
//     blobs (skip what the registry has, mount what another repository of
//     this push received, upload the rest streamed from the bundle's
//     verifying reader), then child manifests, then the index, by digest —
//     and last the tag.
//
// Re-entry: Push is idempotent and resumable. A manifest is stored only
// after everything below it, and everything is probed (HEAD) before it is
// sent, so running Push again after an interruption sends only what did
// not arrive, and re-pushing an unchanged bundle sends no blob at all.
package push

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sync/errgroup"

	"kpaas.dev/appliance/internal/bundle"
	"kpaas.dev/appliance/internal/harbor"
	"kpaas.dev/appliance/internal/retry"
)

// Options configures a push. Zero values take the documented defaults.
type Options struct {
	// Registry is the target, host[:port]; an explicit http:// or https://
	// prefix fixes the scheme.
	Registry string
	// Insecure allows plain HTTP (tried after HTTPS) and TLS certificates
	// that do not verify.
	Insecure bool
	// Username and Password authenticate (basic auth, or bearer tokens
	// obtained with them). The password is never logged.
	Username, Password string

	// Harbor creates the target projects through Harbor's API before
	// pushing.
	Harbor bool
	// PublicProjects makes the Harbor projects it creates public (pulls
	// without credentials, as containerd mirrors need by default).
	PublicProjects bool
	// Mapping places artifacts in the registry; the zero value is one
	// project (first path component) per source registry.
	Mapping Mapping

	// Jobs bounds the blob requests in flight (default 4).
	Jobs int
	// ChunkThreshold is the blob size from which uploads are chunked
	// PATCHes (default 32 MiB); ChunkSize is their size (default 16 MiB).
	ChunkThreshold, ChunkSize int64
	// RequestTimeout bounds every request (default 60s); requests with a
	// body get size/MinRate on top (MinRate default 1 MiB/s).
	RequestTimeout time.Duration
	MinRate        int64
	// Retry is the policy for transient failures (default retry.Default).
	Retry retry.Policy
	// Transport carries the requests (default: http.DefaultTransport's
	// settings, certificate checks off when Insecure). Tests wrap it.
	Transport http.RoundTripper

	// Kinds selects the entries to push (default image and chart).
	Kinds []bundle.Kind
	// Progress receives one line per artifact:
	// "push docker.io/library/nginx:1.25 (3/40): done in 1.2s".
	Progress io.Writer
	// Finished, when set, is called after each artifact's push ended
	// (r.Error says how), with the number of artifacts ended so far and
	// their total: a caller keeps its own record of the push's progress.
	// Artifacts end concurrently: it must be safe for concurrent use.
	Finished func(r ArtifactResult, ended, total int)
}

// Summary reports what a push did. It counts only what arrived: Images,
// Charts and Others are the artifacts that are in the registry now (sent
// or found there); Failed is every other artifact the push was to send,
// whether it failed itself or was never tried because the push stopped
// before it (options, plan, connection, projects, interruption).
type Summary struct {
	Registry string `json:"registry"`
	// OK is true when every artifact arrived; Error is the push's error
	// when it is not.
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	// Total is the number of artifacts the bundle has to push.
	Total    int              `json:"total"`
	Images   int              `json:"images"`
	Charts   int              `json:"charts"`
	Others   int              `json:"others,omitempty"`
	Failed   int              `json:"failed"`
	Projects []string         `json:"projectsCreated,omitempty"`
	Results  []ArtifactResult `json:"artifacts"`

	BlobsSent    int64 `json:"blobsSent"`
	BlobsSkipped int64 `json:"blobsSkipped"`
	BlobsMounted int64 `json:"blobsMounted"`
	BytesSent    int64 `json:"bytesSent"`
	BytesSkipped int64 `json:"bytesSkipped"`
	BytesMounted int64 `json:"bytesMounted"`
	Chunks       int64 `json:"chunks"`

	ManifestsSent    int64 `json:"manifestsSent"`
	ManifestsSkipped int64 `json:"manifestsSkipped"`
	TagsSet          int64 `json:"tagsSet"`
	ForeignLayers    int64 `json:"foreignLayers,omitempty"`

	Requests int64         `json:"requests"`
	Retries  int64         `json:"retries"`
	Duration time.Duration `json:"durationNs"`
	// Throughput is BytesSent per second of Duration.
	Throughput float64 `json:"bytesPerSecond"`
}

// ArtifactResult is the outcome of one artifact.
type ArtifactResult struct {
	Kind     bundle.Kind   `json:"kind"`
	Ref      string        `json:"ref"`    // the bundle's reference
	Target   string        `json:"target"` // HOST/repo[:tag]@digest
	Digest   string        `json:"digest"`
	Duration time.Duration `json:"durationNs"`
	Error    string        `json:"error,omitempty"`
}

// Default option values.
const (
	DefaultJobs           = 4
	DefaultChunkThreshold = 32 << 20
	DefaultChunkSize      = 16 << 20
	DefaultRequestTimeout = 60 * time.Second
	DefaultMinRate        = 1 << 20
)

// withDefaults fills zero values.
func (o Options) withDefaults() Options {
	if o.Jobs <= 0 {
		o.Jobs = DefaultJobs
	}
	if o.ChunkThreshold <= 0 {
		o.ChunkThreshold = DefaultChunkThreshold
	}
	if o.ChunkSize <= 0 {
		o.ChunkSize = DefaultChunkSize
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = DefaultRequestTimeout
	}
	if o.MinRate <= 0 {
		o.MinRate = DefaultMinRate
	}
	if o.Retry.Attempts == 0 {
		o.Retry = retry.Default
	}
	if len(o.Kinds) == 0 {
		o.Kinds = []bundle.Kind{bundle.KindImage, bundle.KindChart}
	}
	return o
}

// Validate reports every problem with the options together.
func (o Options) Validate() error {
	var errs []error
	if o.Registry == "" {
		errs = append(errs, errors.New("no target registry"))
	}
	if o.Mapping.Project != "" && o.Mapping.Prefix != "" {
		errs = append(errs, errors.New("a project and a prefix exclude each other"))
	}
	if p := o.Mapping.Project; p != "" && !harbor.ValidProjectName(p) {
		errs = append(errs, fmt.Errorf("project %q: not a valid project name (lower-case letters and digits separated by '.', '_' or '-')", p))
	}
	if p := strings.Trim(o.Mapping.Prefix, "/"); o.Mapping.Prefix != "" {
		for _, c := range strings.Split(p, "/") {
			if !pathComponent.MatchString(c) {
				errs = append(errs, fmt.Errorf("prefix %q: invalid path component %q", o.Mapping.Prefix, c))
				break
			}
		}
	}
	if o.Password != "" && o.Username == "" {
		errs = append(errs, errors.New("a password without a user name"))
	}
	if o.ChunkSize < 0 || o.ChunkThreshold < 0 || o.Jobs < 0 {
		errs = append(errs, errors.New("negative jobs or chunk sizes"))
	}
	return errors.Join(errs...)
}

// stats are the live counters behind Summary.
type stats struct {
	blobsSent, blobsSkipped, blobsMounted atomic.Int64
	bytesSent, bytesSkipped, bytesMounted atomic.Int64
	chunks, foreign, retries              atomic.Int64
	manifestsSent, manifestsSkipped, tags atomic.Int64
}

func (s *stats) sent(n int64)    { s.blobsSent.Add(1); s.bytesSent.Add(n) }
func (s *stats) skipped(n int64) { s.blobsSkipped.Add(1); s.bytesSkipped.Add(n) }
func (s *stats) mounted(n int64) { s.blobsMounted.Add(1); s.bytesMounted.Add(n) }

// job is one planned artifact.
type job struct {
	entry  bundle.Entry
	ref    reference
	target target
}

// Push copies the bundle's images and charts into the registry. It pushes
// every artifact it can and returns the failures joined (each naming its
// reference); the Summary covers what was done either way.
func Push(ctx context.Context, store *bundle.Store, opts Options) (sum Summary, err error) {
	start := time.Now()
	sum.Registry = opts.Registry
	st := &stats{}
	var c *client
	defer func() { sum.finish(st, c, start, err) }()
	if err := opts.Validate(); err != nil {
		return sum, fmt.Errorf("push options: %w", err)
	}
	o := opts.withDefaults()
	if o.Progress != nil {
		o.Progress = &lockedWriter{w: o.Progress}
	}

	jobs, err := plan(store, o, &sum)
	if err != nil {
		return sum, err
	}
	c = newClient(o)
	if err := retry.Do(ctx, o.Retry, func(ctx context.Context) error { return c.connect(ctx, o.Registry, o.Insecure) }); err != nil {
		return sum, err
	}
	if o.Harbor {
		api, err := harborAPI(c, o)
		if err != nil {
			return sum, err
		}
		projects := targetProjects(jobs)
		created, err := ensureProjects(ctx, api, o, projects)
		sum.Projects = created
		if err != nil {
			return sum, err
		}
		defer asRobot(ctx, api, c, o, projects)()
	}
	sum.Results, err = pushAll(ctx, c, store, o, st, jobs)
	return sum, err
}

// newClient is the registry client of o (defaults filled).
func newClient(o Options) *client {
	rt := o.Transport
	if rt == nil {
		rt = newTransport(o.Insecure)
	}
	return &client{hc: &http.Client{Transport: rt}, user: o.Username, password: o.Password, timeout: o.RequestTimeout, minRate: o.MinRate}
}

// Missing asks the registry for the manifest of every artifact a push of
// the bundle with opts would send, by its digest at its target, and
// returns the references of those it lacks, in the bundle's order. It
// only reads (a pull's scope): without credentials it asks as containerd
// does through a mirror, so an artifact in a project anonymous users
// cannot pull is an error, not missing. It stops at the first error.
func Missing(ctx context.Context, store *bundle.Store, opts Options) ([]string, error) {
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("push options: %w", err)
	}
	o := opts.withDefaults()
	jobs, err := plan(store, o, &Summary{})
	if err != nil {
		return nil, err
	}
	c := newClient(o)
	c.anonymous = true
	if err := retry.Do(ctx, o.Retry, func(ctx context.Context) error { return c.connect(ctx, o.Registry, o.Insecure) }); err != nil {
		return nil, err
	}
	var missing []string
	for _, j := range jobs {
		var d string
		err := retry.Do(ctx, o.Retry, func(ctx context.Context) (err error) {
			d, err = c.headManifest(ctx, j.target.Repo, j.entry.Descriptor.Digest.String(), pullScope(j.target.Repo))
			return err
		})
		if err != nil {
			return missing, fmt.Errorf("%s at %s: %w", j.entry.Ref, j.target.Repo, err)
		}
		if d == "" {
			missing = append(missing, j.entry.Ref)
		}
	}
	return missing, nil
}

// plan lists the entries to push and their targets.
func plan(store *bundle.Store, o Options, sum *Summary) ([]job, error) {
	entries, err := store.Entries()
	if err != nil {
		return nil, err
	}
	var jobs []job
	var errs []error
	seen := map[string]string{} // repo:tag or repo@digest → bundle digest
	for _, e := range entries {
		if !slices.Contains(o.Kinds, e.Kind) {
			continue
		}
		r, err := parseRef(e.Ref)
		if err != nil {
			errs = append(errs, fmt.Errorf("entry %s: %w", e.Descriptor.Digest, err))
			continue
		}
		t, err := o.Mapping.target(r)
		if err != nil {
			errs = append(errs, fmt.Errorf("entry %s: %w", e.Ref, err))
			continue
		}
		if t.Tag != "" {
			key := t.Repo + ":" + t.Tag
			if d, ok := seen[key]; ok && d != e.Descriptor.Digest.String() {
				errs = append(errs, fmt.Errorf("entry %s: target %s already holds %s", e.Ref, key, d))
				continue
			}
			seen[key] = e.Descriptor.Digest.String()
		}
		jobs = append(jobs, job{entry: e, ref: r, target: t})
	}
	// Entries refused by the plan count too: they are not pushed either.
	sum.Total = len(jobs) + len(errs)
	return jobs, errors.Join(errs...)
}

// targetProjects are the Harbor projects the jobs push into, in name
// order.
func targetProjects(jobs []job) []string {
	var names []string
	for _, j := range jobs {
		if !slices.Contains(names, j.target.Project) {
			names = append(names, j.target.Project)
		}
	}
	slices.Sort(names)
	return names
}

// ensureProjects creates the Harbor projects that do not exist yet, in
// order, and returns those it created.
func ensureProjects(ctx context.Context, hc *harbor.Client, o Options, names []string) ([]string, error) {
	var created []string
	for _, n := range names {
		if !harbor.ValidProjectName(n) {
			return created, fmt.Errorf("harbor project %q: invalid name", n)
		}
		ok, err := hc.EnsureProject(ctx, n, o.PublicProjects)
		if err != nil {
			return created, err
		}
		if ok {
			created = append(created, n)
			progressf(o.Progress, "project %s: created\n", n)
		}
	}
	return created, nil
}

// pushAll pushes the artifacts, up to Jobs at once.
func pushAll(ctx context.Context, c *client, store *bundle.Store, o Options, st *stats, jobs []job) ([]ArtifactResult, error) {
	b := newBlobs(c, store, &o, st)
	if err := b.plan(jobs); err != nil {
		return nil, err
	}
	p := &artifacts{c: c, store: store, blobs: b, st: st, retry: o.Retry, manifests: map[string]*flight{}}
	results := make([]ArtifactResult, len(jobs))
	var done atomic.Int32
	var g errgroup.Group
	g.SetLimit(o.Jobs)
	for i, j := range jobs {
		g.Go(func() error {
			t0 := time.Now()
			err := p.push(ctx, j)
			r := ArtifactResult{Kind: j.entry.Kind, Ref: j.entry.Ref, Digest: j.entry.Descriptor.Digest.String(),
				Target: targetString(c.base.Host, j.target, j.entry.Descriptor.Digest), Duration: time.Since(t0)}
			n := done.Add(1)
			if err != nil {
				r.Error = err.Error()
				progressf(o.Progress, "push %s (%d/%d): failed: %v\n", j.entry.Ref, n, len(jobs), err)
			} else {
				progressf(o.Progress, "push %s (%d/%d): done in %s\n", j.entry.Ref, n, len(jobs), r.Duration.Round(time.Millisecond))
			}
			results[i] = r
			if o.Finished != nil {
				o.Finished(r, int(n), len(jobs))
			}
			if err != nil {
				return fmt.Errorf("pushing %s: %w", j.entry.Ref, err)
			}
			return nil
		})
	}
	// Every artifact runs to its end; the failures are joined.
	var errs []error
	_ = g.Wait()
	for i, r := range results {
		if r.Error != "" {
			errs = append(errs, fmt.Errorf("pushing %s: %s", jobs[i].entry.Ref, r.Error))
		}
	}
	if err := ctx.Err(); err != nil {
		errs = append(errs, err)
	}
	return results, errors.Join(errs...)
}

func targetString(host string, t target, d v1.Hash) string {
	s := host + "/" + t.Repo
	if t.Tag != "" {
		s += ":" + t.Tag
	}
	return s + "@" + d.String()
}

func progressf(w io.Writer, format string, args ...any) {
	if w != nil {
		fmt.Fprintf(w, format, args...)
	}
}

// lockedWriter writes one progress line at a time.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// finish fills the counters, counting as arrived only the artifacts
// whose push succeeded, and records the push's error.
func (s *Summary) finish(st *stats, c *client, start time.Time, err error) {
	s.BlobsSent, s.BlobsSkipped, s.BlobsMounted = st.blobsSent.Load(), st.blobsSkipped.Load(), st.blobsMounted.Load()
	s.BytesSent, s.BytesSkipped, s.BytesMounted = st.bytesSent.Load(), st.bytesSkipped.Load(), st.bytesMounted.Load()
	s.Chunks, s.ForeignLayers, s.Retries = st.chunks.Load(), st.foreign.Load(), st.retries.Load()
	s.ManifestsSent, s.ManifestsSkipped, s.TagsSet = st.manifestsSent.Load(), st.manifestsSkipped.Load(), st.tags.Load()
	if c != nil {
		s.Requests = c.requests.Load()
	}
	s.Images, s.Charts, s.Others = 0, 0, 0
	for _, r := range s.Results {
		if r.Error != "" || r.Ref == "" {
			continue
		}
		switch r.Kind {
		case bundle.KindImage:
			s.Images++
		case bundle.KindChart:
			s.Charts++
		default:
			s.Others++
		}
	}
	s.Failed = s.Total - s.Images - s.Charts - s.Others
	s.OK = err == nil && s.Failed == 0
	if err != nil {
		s.Error = err.Error()
	}
	s.Duration = time.Since(start)
	if s.Duration > 0 {
		s.Throughput = float64(s.BytesSent) / s.Duration.Seconds()
	}
}

// String is a one-line human summary. When the push failed it says so
// first, and how many artifacts arrived and how many did not.
func (s Summary) String() string {
	counts := fmt.Sprintf("%d blobs sent (%s), %d skipped, %d mounted; %d manifests sent, %d skipped; %s/s",
		s.BlobsSent, humanBytes(s.BytesSent), s.BlobsSkipped, s.BlobsMounted, s.ManifestsSent, s.ManifestsSkipped, humanBytes(int64(s.Throughput)))
	if s.OK {
		return fmt.Sprintf("pushed %d images and %d charts to %s in %s: %s",
			s.Images, s.Charts, s.Registry, s.Duration.Round(time.Millisecond), counts)
	}
	return fmt.Sprintf("push to %s FAILED after %s: %d of %d artifacts arrived (%d images, %d charts), %d did not; %s",
		s.Registry, s.Duration.Round(time.Millisecond), s.Images+s.Charts+s.Others, s.Total, s.Images, s.Charts, s.Failed, counts)
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}
