package bundle

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"
)

// VerifyOptions configures Verify.
type VerifyOptions struct {
	// PublicKey, when set, must verify SHA256SUMS.sig. When nil, a
	// signature present in the bundle is reported as not checked.
	PublicKey ed25519.PublicKey
	// Jobs is how many blobs are hashed at once (default: the number of
	// CPUs, at least 2, at most 4).
	Jobs int
	// Progress, when set, is called after each blob is hashed, never
	// concurrently.
	Progress func(VerifyProgress)
}

// VerifyProgress tells how far the hashing of blobs is.
type VerifyProgress struct {
	Blobs, BlobsDone int
	Bytes, BytesDone int64
}

// Signature states reported by Verify.
const (
	SignatureVerified   = "verified"
	SignatureInvalid    = "invalid"
	SignatureMissing    = "missing"              // a key was given, the bundle has no signature
	SignatureNotChecked = "present, not checked" // the bundle is signed, no key was given
	SignatureAbsent     = "absent"               // neither
)

// Report is what Verify found.
type Report struct {
	Artifacts int   `json:"artifacts"`
	Blobs     int   `json:"blobs"` // distinct blobs reachable from index.json
	Bytes     int64 `json:"bytes"` // their total size
	// Unreferenced counts blob files that index.json does not reach
	// (left by an earlier bake); they are not an error.
	Unreferenced int `json:"unreferenced"`
	// TempFiles and TempBytes count temp files an interrupted write left
	// (not an error: the next bake removes them).
	TempFiles int    `json:"tempFiles"`
	TempBytes int64  `json:"tempBytes"`
	Signature string `json:"signature"`
	// KeyFingerprint is the fingerprint of the key that was checked.
	KeyFingerprint string    `json:"keyFingerprint,omitempty"`
	Problems       []Problem `json:"problems"`
}

// OK reports whether no problem was found.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

// MarshalJSON adds "ok" (the value of OK) to the report, as every --json
// report that can fail has one, and writes no problems as [].
func (r *Report) MarshalJSON() ([]byte, error) {
	type plain Report
	p := plain(*r)
	if p.Problems == nil {
		p.Problems = []Problem{}
	}
	return json.Marshal(struct {
		OK bool `json:"ok"`
		plain
	}{r.OK(), p})
}

// Problem is one finding of Verify. Problems about a blob name every
// artifact that uses it, with the blob's role in it.
type Problem struct {
	// Path is the file of the bundle concerned, relative and with
	// slashes (blobs/sha256/…, index.json, kpaas-lock.json, …).
	Path string `json:"path,omitempty"`
	// Blob is the digest of the blob concerned, if any.
	Blob string `json:"blob,omitempty"`
	// Uses are the artifacts that reach the blob.
	Uses    []Use  `json:"uses,omitempty"`
	Message string `json:"message"`
}

// Use is one place where an artifact reaches a blob.
type Use struct {
	Kind Kind   `json:"kind"`
	Ref  string `json:"ref"`
	// Role is where the blob sits in the artifact, e.g. "layer 2 of
	// linux/amd64 manifest sha256:…" (layers are counted from 1).
	Role string `json:"role"`
}

func (u Use) artifact() string { return string(u.Kind) + " " + u.Ref }

// String renders the problem on one line, e.g.
//
//	image docker.io/library/nginx:1.25: blob sha256:ab… (layer 2 of linux/amd64 manifest sha256:cd…): content has digest sha256:ef…
func (p Problem) String() string {
	if len(p.Uses) == 0 {
		if p.Path == "" {
			return p.Message
		}
		return p.Path + ": " + p.Message
	}
	var b strings.Builder
	u := p.Uses[0]
	fmt.Fprintf(&b, "%s: blob %s (%s): %s", u.artifact(), p.Blob, u.Role, p.Message)
	for i, u := range p.Uses[1:] {
		if i == 0 {
			b.WriteString("; also used by ")
		} else {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s (%s)", u.artifact(), u.Role)
	}
	return b.String()
}

// VerifyError is returned by Verify when it found problems.
type VerifyError struct {
	Problems []Problem
}

func (e *VerifyError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "bundle verification found %d problem", len(e.Problems))
	if len(e.Problems) != 1 {
		b.WriteString("s")
	}
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.String())
	}
	return b.String()
}

// Verify checks the whole bundle and reports every problem it finds:
//
//   - every artifact of index.json is walked; every distinct blob it
//     reaches is read once and its size and sha256 checked (a few at once);
//   - SHA256SUMS: the metadata files are hashed and compared, and its blob
//     lines must be exactly the blobs index.json reaches;
//   - kpaas-lock.json, when present, must list the same artifacts as
//     index.json with the same digests, media types and sizes;
//   - SHA256SUMS.sig, when opts.PublicKey is set.
//
// It returns the report and, when the report has problems, a
// *VerifyError listing them; other errors (a cancelled context) come with
// a nil report.
func (s *Store) Verify(ctx context.Context, opts VerifyOptions) (*Report, error) {
	r := &Report{Problems: []Problem{}}
	g := s.graph(ctx)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r.Artifacts = len(g.entries)
	r.Blobs = len(g.order)
	for _, h := range g.order {
		r.Bytes += g.blobs[h].size
	}

	if err := s.hashBlobs(ctx, g, opts); err != nil {
		return nil, err
	}
	// Blob problems in the order the blobs were first reached.
	for _, h := range g.order {
		b := g.blobs[h]
		if b.err != nil {
			r.Problems = append(r.Problems, Problem{Path: blobRel(h), Blob: h.String(), Uses: b.uses, Message: describeBlobError(b.err)})
		}
	}
	r.Problems = append(r.Problems, g.problems...)
	r.Problems = append(r.Problems, s.checkLock(g)...)
	r.Problems = append(r.Problems, s.checkSums(g)...)
	r.Problems = append(r.Problems, s.checkSignature(r, opts.PublicKey)...)
	r.Unreferenced = s.countUnreferenced(g)
	tmp, tmpSize := s.TempFiles()
	r.TempFiles, r.TempBytes = len(tmp), tmpSize

	if len(r.Problems) > 0 {
		return r, &VerifyError{Problems: r.Problems}
	}
	return r, nil
}

// errMissing marks a blob whose file does not exist.
var errMissing = errors.New("missing")

func describeBlobError(err error) string {
	var de *DigestError
	switch {
	case errors.As(err, &de) && de.WantSize >= 0 && de.GotSize != de.WantSize:
		if de.GotSize < de.WantSize {
			return fmt.Sprintf("truncated: size %d, want %d", de.GotSize, de.WantSize)
		}
		return fmt.Sprintf("size %d, want %d", de.GotSize, de.WantSize)
	case errors.As(err, &de):
		return "content has digest " + de.Got.String()
	case errors.Is(err, errMissing):
		return "missing"
	}
	return err.Error()
}

func blobRel(h v1.Hash) string { return BlobsDir + "/" + h.Algorithm + "/" + h.Hex }

// graph is every blob reachable from index.json, with the artifacts and
// roles that reach it.
type graph struct {
	entries   []Entry
	blobs     map[v1.Hash]*blobNode
	order     []v1.Hash   // first reached first
	artifacts [][]v1.Hash // distinct blobs of each entry, in order
	// problems that are not about one blob's content (index.json
	// unreadable, inconsistent descriptors).
	problems []Problem
	// manifests holds the parsed content of index and manifest blobs.
	manifests map[v1.Hash]any
}

type blobNode struct {
	digest    v1.Hash
	size      int64
	mediaType types.MediaType
	uses      []Use
	checked   bool  // content hashed (manifests: while walking)
	err       error // what was wrong with the content
}

// graph walks every artifact of index.json. Unlike Walk, it goes on past
// a broken manifest (recording it) so that every problem is found, and it
// reads each manifest once even when several artifacts share it.
func (s *Store) graph(ctx context.Context) *graph {
	g := &graph{blobs: map[v1.Hash]*blobNode{}, manifests: map[v1.Hash]any{}}
	entries, err := s.Entries()
	if err != nil {
		g.problems = append(g.problems, Problem{Path: IndexFile, Message: err.Error()})
		return g
	}
	g.entries = entries
	for _, e := range entries {
		if ctx.Err() != nil {
			return g
		}
		seen := map[v1.Hash]bool{}
		var mine []v1.Hash
		role := "top-level manifest"
		if IsIndex(e.Descriptor.MediaType) {
			role = "top-level index"
		}
		g.visit(s, e, e.Descriptor, role, func(h v1.Hash) {
			if !seen[h] {
				seen[h] = true
				mine = append(mine, h)
			}
		})
		g.artifacts = append(g.artifacts, mine)
	}
	return g
}

func (g *graph) visit(s *Store, e Entry, d v1.Descriptor, role string, mark func(v1.Hash)) {
	use := Use{Kind: e.Kind, Ref: e.Ref, Role: role}
	if err := checkHash(d.Digest); err != nil {
		g.problems = append(g.problems, Problem{Blob: d.Digest.String(), Uses: []Use{use}, Message: err.Error()})
		return
	}
	b, ok := g.blobs[d.Digest]
	if !ok {
		b = &blobNode{digest: d.Digest, size: d.Size, mediaType: d.MediaType}
		g.blobs[d.Digest] = b
		g.order = append(g.order, d.Digest)
	} else if b.size != d.Size {
		g.problems = append(g.problems, Problem{Path: blobRel(d.Digest), Blob: d.Digest.String(), Uses: []Use{use},
			Message: fmt.Sprintf("described with size %d here and %d elsewhere", d.Size, b.size)})
	}
	if !containsUse(b.uses, use) {
		b.uses = append(b.uses, use)
	}
	mark(d.Digest)
	if !IsIndex(d.MediaType) && !IsManifest(d.MediaType) {
		return
	}
	parsed, ok := g.manifests[d.Digest]
	if !ok {
		parsed = g.readManifest(s, b, d)
		g.manifests[d.Digest] = parsed
	}
	name := manifestName(d)
	switch m := parsed.(type) {
	case *v1.IndexManifest:
		for _, c := range m.Manifests {
			kind := "manifest"
			if IsIndex(c.MediaType) {
				kind = "index"
			}
			g.visit(s, e, c, strings.TrimSpace(platformOf(c)+" "+kind)+" of "+name, mark)
		}
	case *v1.Manifest:
		g.visit(s, e, m.Config, "config of "+name, mark)
		for i, l := range m.Layers {
			g.visit(s, e, l, fmt.Sprintf("layer %d of %s", i+1, name), mark)
		}
	}
}

// readManifest reads and parses an index or manifest blob, recording a
// content problem on b. It returns nil when the blob cannot be used.
func (g *graph) readManifest(s *Store, b *blobNode, d v1.Descriptor) any {
	raw, err := s.readChecked(context.Background(), d.Digest, d.Size)
	b.checked = true
	if err != nil {
		b.err = err
		return nil
	}
	if IsIndex(d.MediaType) {
		im, err := v1.ParseIndexManifest(bytes.NewReader(raw))
		if err != nil {
			b.err = fmt.Errorf("parsing index: %w", err)
			return nil
		}
		return im
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		b.err = fmt.Errorf("parsing manifest: %w", err)
		return nil
	}
	return m
}

func containsUse(us []Use, u Use) bool {
	for _, x := range us {
		if x == u {
			return true
		}
	}
	return false
}

// manifestName is "linux/amd64 manifest sha256:…" or "index sha256:…".
func manifestName(d v1.Descriptor) string {
	kind := "manifest"
	if IsIndex(d.MediaType) {
		kind = "index"
	}
	return strings.TrimSpace(platformOf(d)+" "+kind) + " " + d.Digest.String()
}

func platformOf(d v1.Descriptor) string {
	if d.Platform == nil || d.Platform.OS == "" {
		return ""
	}
	return d.Platform.String()
}

// readChecked reads a whole blob and checks its size and digest, with
// errMissing for an absent file and *DigestError for wrong content.
func (s *Store) readChecked(ctx context.Context, h v1.Hash, size int64) ([]byte, error) {
	var buf bytes.Buffer
	if err := s.hashBlob(ctx, h, size, &buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// hashBlob streams a blob (into w, when not nil) and checks it.
func (s *Store) hashBlob(ctx context.Context, h v1.Hash, size int64, w io.Writer) error {
	p, err := s.BlobPath(h)
	if err != nil {
		return err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return errMissing
	}
	if err != nil {
		return err
	}
	defer f.Close()
	hasher := sha256.New()
	dst := io.Writer(hasher)
	if w != nil {
		dst = io.MultiWriter(hasher, w)
	}
	n, err := io.CopyBuffer(dst, ctxReader{ctx, f}, make([]byte, 1<<20))
	if err != nil {
		return err
	}
	got := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(hasher.Sum(nil))}
	if got != h || (size >= 0 && n != size) {
		return &DigestError{Blob: h, Got: got, WantSize: size, GotSize: n}
	}
	return nil
}

// ctxReader stops a long copy when its context is cancelled.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// hashBlobs checks the content of every blob the walk did not read, a
// few at a time, each once.
func (s *Store) hashBlobs(ctx context.Context, g *graph, opts VerifyOptions) error {
	jobs := opts.Jobs
	if jobs <= 0 {
		jobs = min(max(runtime.GOMAXPROCS(0), 2), 4)
	}
	var todo []*blobNode
	var p VerifyProgress
	for _, h := range g.order {
		b := g.blobs[h]
		p.Blobs++
		p.Bytes += b.size
		if b.checked {
			p.BlobsDone++
			p.BytesDone += b.size
			continue
		}
		todo = append(todo, b)
	}
	// Largest first keeps the workers busy to the end.
	sort.SliceStable(todo, func(i, j int) bool { return todo[i].size > todo[j].size })
	var mu sync.Mutex
	eg, ctx := errgroup.WithContext(ctx)
	eg.SetLimit(jobs)
	for _, b := range todo {
		eg.Go(func() error {
			err := s.hashBlob(ctx, b.digest, b.size, nil)
			if cerr := ctx.Err(); cerr != nil {
				return cerr
			}
			mu.Lock()
			defer mu.Unlock()
			b.checked, b.err = true, err
			p.BlobsDone++
			p.BytesDone += b.size
			if opts.Progress != nil {
				opts.Progress(p)
			}
			return nil
		})
	}
	return eg.Wait()
}

// checkLock compares kpaas-lock.json with index.json.
func (s *Store) checkLock(g *graph) []Problem {
	if _, err := os.Stat(s.Path(LockFile)); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	lock, err := s.ReadLock()
	if err != nil {
		return []Problem{{Path: LockFile, Message: err.Error()}}
	}
	type key struct {
		kind Kind
		ref  string
	}
	index := map[key]int{}
	for i, e := range g.entries {
		index[key{e.Kind, e.Ref}] = i
	}
	var out []Problem
	add := func(k key, format string, args ...any) {
		out = append(out, Problem{Path: LockFile, Message: fmt.Sprintf("%s %s: ", k.kind, k.ref) + fmt.Sprintf(format, args...)})
	}
	inLock := map[key]bool{}
	for _, a := range lock.Artifacts {
		k := key{a.Kind, a.Ref}
		if inLock[k] {
			add(k, "listed twice")
			continue
		}
		inLock[k] = true
		i, ok := index[k]
		if !ok {
			add(k, "in %s but not in %s", LockFile, IndexFile)
			continue
		}
		d := g.entries[i].Descriptor
		if a.Digest != d.Digest.String() {
			add(k, "digest %s in %s, %s in %s", a.Digest, LockFile, d.Digest, IndexFile)
			continue
		}
		if a.MediaType != "" && a.MediaType != string(d.MediaType) {
			add(k, "media type %s in %s, %s in %s", a.MediaType, LockFile, d.MediaType, IndexFile)
		}
		if size := g.artifactSize(i); a.Size != 0 && a.Size != size && g.complete(i) {
			add(k, "size %d in %s, its blobs add up to %d", a.Size, LockFile, size)
		}
	}
	for _, e := range g.entries {
		if k := (key{e.Kind, e.Ref}); !inLock[k] {
			add(k, "in %s but not in %s", IndexFile, LockFile)
		}
	}
	return out
}

// artifactSize is the sum of the sizes of the distinct blobs of entry i.
func (g *graph) artifactSize(i int) int64 {
	var n int64
	for _, h := range g.artifacts[i] {
		n += g.blobs[h].size
	}
	return n
}

// complete reports whether every manifest of entry i could be read, so
// that its blob list is whole.
func (g *graph) complete(i int) bool {
	for _, h := range g.artifacts[i] {
		if b := g.blobs[h]; (IsIndex(b.mediaType) || IsManifest(b.mediaType)) && g.manifests[h] == nil {
			return false
		}
	}
	return true
}

// incomplete reports whether some index or manifest could not be read,
// so that the blobs below it are unknown.
func (g *graph) incomplete() bool {
	for h, b := range g.blobs {
		if (IsIndex(b.mediaType) || IsManifest(b.mediaType)) && g.manifests[h] == nil {
			return true
		}
	}
	return false
}

// countUnreferenced counts blob files that index.json does not reach.
func (s *Store) countUnreferenced(g *graph) int {
	des, err := os.ReadDir(s.Path(BlobsDir + "/sha256"))
	if err != nil {
		return 0
	}
	n := 0
	for _, de := range des {
		h := v1.Hash{Algorithm: "sha256", Hex: de.Name()}
		if checkHash(h) != nil || !de.Type().IsRegular() {
			continue
		}
		if _, ok := g.blobs[h]; !ok {
			n++
		}
	}
	return n
}

// checkSignature fills r.Signature and returns its problem, if any.
func (s *Store) checkSignature(r *Report, pub ed25519.PublicKey) []Problem {
	_, err := os.Stat(s.Path(SignatureFile))
	present := err == nil
	switch {
	case pub == nil && present:
		r.Signature = SignatureNotChecked
		return nil
	case pub == nil:
		r.Signature = SignatureAbsent
		return nil
	}
	r.KeyFingerprint = Fingerprint(pub)
	if !present {
		r.Signature = SignatureMissing
		return []Problem{{Path: SignatureFile, Message: "missing: the bundle is not signed"}}
	}
	if err := s.VerifySignature(pub); err != nil {
		r.Signature = SignatureInvalid
		return []Problem{{Path: SignatureFile, Message: err.Error()}}
	}
	r.Signature = SignatureVerified
	return nil
}
