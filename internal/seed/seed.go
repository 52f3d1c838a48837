// Package seed is the registry seed: a read-only OCI distribution registry
// over a bundle, so that containerd, kubelet, Helm and skopeo can pull the
// bundle's images and charts on a node with no network.
//
// It answers the pull and content-discovery side of the OCI distribution
// spec: the /v2/ ping, manifests and blobs by tag or digest (GET and HEAD,
// byte ranges for blobs), tag lists, the catalog and the referrers API.
// Every write (PUT, POST, PATCH, DELETE) is refused with 405 UNSUPPORTED.
//
// Repositories carry the names of the original references: the artifact
// docker.io/library/nginx:1.25 is the repository docker.io/library/nginx,
// tag 1.25. A request names its repository in one of three ways:
//
//	/v2/library/nginx/manifests/1.25?ns=docker.io    containerd's mirror request
//	/v2/docker.io/library/nginx/manifests/1.25       the registry in the path
//	/v2/library/nginx/manifests/1.25                 neither: docker.io (WithDefaultRegistry)
//
// A repository only serves the blobs that its own artifacts reach, so a
// digest can never be used to read content of another repository, and no
// request can name a file: paths are built from validated sha256 digests
// only.
//
// Integrity: every blob is hashed in full once, before it is first served,
// and the result is remembered (keyed by digest, file size and modification
// time, so a replaced file is hashed again). Content that does not match its
// digest is never served: the request fails with 500 and the damage is
// logged with the blob and the artifact it belongs to. Manifests are small
// and are verified on every read.
//
// Lifecycle: New reads the bundle's index and walks every artifact once;
// the bundle is read-only media, so the result is not refreshed. The
// returned Server is safe for any number of concurrent requests.
package seed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"kpaas.dev/appliance/internal/bundle"
)

// Server serves one bundle. It is an http.Handler.
type Server struct {
	store    *bundle.Store
	log      *slog.Logger
	fallback string
	cat      *catalog
	verified *verifier
}

// Option configures a Server.
type Option func(*Server)

// WithLogger sets where the server logs: damaged content at error level,
// one "pull" line per manifest served by GET at info level (repository,
// reference, digest, client), one line per request at debug level. The
// default discards everything.
func WithLogger(l *slog.Logger) Option {
	return func(s *Server) {
		if l != nil {
			s.log = l
		}
	}
}

// WithDefaultRegistry sets the registry for requests whose repository
// names none (no ns parameter, no registry as first path component).
// The default is docker.io, as for docker and containerd; "" answers such
// requests with 404 NAME_UNKNOWN.
func WithDefaultRegistry(registry string) Option {
	return func(s *Server) { s.fallback = canonicalRegistry(registry) }
}

// New returns a Server for the bundle in store. It reads every artifact's
// manifests once (a damaged artifact is logged and served as far as it can
// be read); it fails only when the bundle's index cannot be read.
func New(store *bundle.Store, opts ...Option) (*Server, error) {
	s := &Server{
		store:    store,
		log:      slog.New(slog.DiscardHandler),
		fallback: dockerHub,
		verified: newVerifier(),
	}
	for _, o := range opts {
		o(s)
	}
	cat, err := buildCatalog(store, s.log)
	if err != nil {
		return nil, fmt.Errorf("reading bundle %s: %w", store.Root(), err)
	}
	s.cat = cat
	return s, nil
}

// Artifacts is how many of the bundle's artifacts the server serves.
func (s *Server) Artifacts() int { return s.cat.artifacts }

// Repositories lists the repository names served, sorted.
func (s *Server) Repositories() []string { return append([]string(nil), s.cat.names...) }

// ServeHTTP answers one request of the distribution API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.log.Enabled(r.Context(), slog.LevelDebug) {
		start := time.Now()
		rec := &recorder{ResponseWriter: w, status: http.StatusOK}
		defer func() {
			s.log.Debug("request", "method", r.Method, "uri", r.URL.RequestURI(), "status", rec.status,
				"bytes", rec.bytes, "duration", time.Since(start).Round(time.Microsecond), "remote", r.RemoteAddr)
		}()
		w = rec
	}
	s.route(w, r)
}

// route dispatches on the path. It does not use http.ServeMux, which would
// clean (and redirect) paths holding "..": such names are refused here.
func (s *Server) route(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	// Route on the escaped path, so that an escaped slash stays inside the
	// part it was written in (and fails validation there).
	p := r.URL.EscapedPath()
	if p != "/v2" && !strings.HasPrefix(p, "/v2/") {
		writeError(w, r, http.StatusNotFound, codeUnsupported, "not a registry API path", nil)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, r, http.StatusMethodNotAllowed, codeUnsupported, "the registry seed is read-only", map[string]string{"method": r.Method})
		return
	}
	rest := strings.TrimPrefix(strings.TrimPrefix(p, "/v2"), "/")
	switch rest {
	case "":
		writeJSON(w, r, "application/json", []byte("{}"))
		return
	case "_catalog":
		s.serveCatalog(w, r)
		return
	}
	if name, ok := strings.CutSuffix(rest, "/tags/list"); ok {
		if repo, name, ok := s.lookup(w, r, unescape(name)); ok {
			s.serveTags(w, r, repo, name)
		}
		return
	}
	for _, route := range []struct {
		sep   string
		serve func(http.ResponseWriter, *http.Request, *repository, string)
	}{
		{"/manifests/", s.serveManifest},
		{"/blobs/", s.serveBlob},
		{"/referrers/", s.serveReferrers},
	} {
		i := strings.LastIndex(rest, route.sep)
		if i < 0 {
			continue
		}
		arg := rest[i+len(route.sep):]
		if arg == "" || strings.Contains(arg, "/") {
			continue
		}
		if repo, _, ok := s.lookup(w, r, unescape(rest[:i])); ok {
			route.serve(w, r, repo, unescape(arg))
		}
		return
	}
	writeError(w, r, http.StatusNotFound, codeUnsupported, "unknown or unsupported registry endpoint", nil)
}

// unescape decodes one part of an escaped path. A part that does not
// decode is returned as is: validation refuses it.
func unescape(s string) string {
	if u, err := url.PathUnescape(s); err == nil {
		return u
	}
	return s
}

// lookup resolves the repository a request names, answering the request
// itself when it names none the bundle holds.
func (s *Server) lookup(w http.ResponseWriter, r *http.Request, name string) (*repository, string, bool) {
	full, st := repoName(name, r.URL.Query().Get("ns"), s.fallback)
	switch st {
	case nameInvalid:
		writeError(w, r, http.StatusBadRequest, codeNameInvalid, "invalid repository name", map[string]string{"name": name})
		return nil, "", false
	case nameNoRegistry:
		writeError(w, r, http.StatusNotFound, codeNameUnknown, "repository name names no registry", map[string]string{"name": name})
		return nil, "", false
	}
	repo, ok := s.cat.repos[full]
	if !ok {
		writeError(w, r, http.StatusNotFound, codeNameUnknown, "repository name not known to the registry seed", map[string]string{"name": full})
		return nil, "", false
	}
	return repo, name, true
}

// serveManifest answers GET and HEAD of a manifest by tag or digest. The
// manifest is read and verified on every request.
func (s *Server) serveManifest(w http.ResponseWriter, r *http.Request, repo *repository, reference string) {
	var (
		d     v1.Descriptor
		found bool
	)
	if isDigestRef(reference) {
		algo, _, ok := parseDigest(reference)
		if !ok {
			writeError(w, r, http.StatusBadRequest, codeDigestInvalid, "invalid digest", map[string]string{"digest": reference})
			return
		}
		if algo == "sha256" {
			h, _ := v1.NewHash(reference)
			d, found = repo.manifests[h]
		}
	} else {
		if !tagRE.MatchString(reference) {
			writeError(w, r, http.StatusBadRequest, codeTagInvalid, "invalid tag", map[string]string{"tag": reference})
			return
		}
		d, found = repo.tags[reference]
	}
	if !found {
		writeError(w, r, http.StatusNotFound, codeManifestUnknown, "manifest unknown", map[string]string{"name": repo.name, "reference": reference})
		return
	}
	b, err := s.store.ReadManifest(d)
	if err != nil {
		s.contentError(w, r, repo, d.Digest, err, codeManifestUnknown)
		return
	}
	h := w.Header()
	h.Set("Docker-Content-Digest", d.Digest.String())
	h.Set("ETag", `"`+d.Digest.String()+`"`)
	writeJSON(w, r, string(d.MediaType), b)
	if r.Method == http.MethodGet {
		// The pull record: one line per manifest served, at info level, so
		// a node's seed log says which images it served (and to whom).
		s.log.Info("pull", "repository", repo.name, "reference", reference, "digest", d.Digest.String(), "remote", r.RemoteAddr)
	}
}

// serveBlob answers GET and HEAD of a blob, with byte ranges.
func (s *Server) serveBlob(w http.ResponseWriter, r *http.Request, repo *repository, dgst string) {
	algo, _, ok := parseDigest(dgst)
	if !ok {
		writeError(w, r, http.StatusBadRequest, codeDigestInvalid, "invalid digest", map[string]string{"digest": dgst})
		return
	}
	var (
		b     blob
		found bool
		h     v1.Hash
	)
	if algo == "sha256" {
		h, _ = v1.NewHash(dgst)
		b, found = repo.blobs[h]
	}
	if !found {
		writeError(w, r, http.StatusNotFound, codeBlobUnknown, "blob unknown to repository", map[string]string{"name": repo.name, "digest": dgst})
		return
	}
	f, err := s.openVerified(h, b.size)
	if err != nil {
		s.contentError(w, r, repo, h, err, codeBlobUnknown)
		return
	}
	defer f.Close()
	hd := w.Header()
	hd.Set("Content-Type", "application/octet-stream")
	hd.Set("Docker-Content-Digest", h.String())
	hd.Set("ETag", `"`+h.String()+`"`)
	hd.Set("Cache-Control", "max-age=31536000")
	// ServeContent answers ranges and conditionals. Given the *os.File it
	// lets the kernel copy the bytes (sendfile): a saving for remote
	// clients. On loopback, sendfile only moves the copying and TCP work
	// onto the puller, which on a node is the CPU-bound side (it also
	// hashes, decompresses and unpacks): measured 0.89–1.02× of
	// distribution's pull throughput with sendfile, 1.11–1.16× without
	// (docs/benchmarks.md). So loopback clients get a plain reader.
	var content io.ReadSeeker = f
	if isLoopbackConn(r) {
		content = struct{ io.ReadSeeker }{f}
	}
	if !rangeFix(r, b.size) {
		hd.Set("Content-Range", fmt.Sprintf("bytes */%d", b.size))
		http.Error(w, "requested range not satisfiable", http.StatusRequestedRangeNotSatisfiable)
		return
	}
	http.ServeContent(w, r, "", time.Time{}, content)
}

// rangeFix corrects the Range header of r where http.ServeContent departs
// from RFC 9110 §14.2, before ServeContent reads it:
//
//   - a range unit other than bytes (compared case-insensitively) is
//     ignored: the whole blob is sent with 200 (ServeContent answers 416);
//   - a suffix range of length zero (bytes=-0) is unsatisfiable and left
//     out; when nothing satisfiable is left, rangeFix returns false and the
//     caller answers 416 with "Content-Range: bytes */SIZE" (ServeContent
//     answers 206 with an impossible Content-Range).
//
// Anything else is left to ServeContent.
func rangeFix(r *http.Request, size int64) bool {
	v := r.Header.Get("Range")
	if v == "" {
		return true
	}
	unit, set, ok := strings.Cut(v, "=")
	if !ok || !strings.EqualFold(strings.TrimSpace(unit), "bytes") {
		r.Header.Del("Range")
		return true
	}
	var kept []string
	dropped := false
	for _, spec := range strings.Split(set, ",") {
		spec = strings.TrimSpace(spec)
		if spec == "" {
			continue
		}
		if first, last, ok := strings.Cut(spec, "-"); ok && strings.TrimSpace(first) == "" {
			if n, err := strconv.ParseInt(strings.TrimSpace(last), 10, 64); err == nil && n == 0 {
				dropped = true
				continue
			}
		}
		kept = append(kept, spec)
	}
	if dropped && len(kept) == 0 {
		return false
	}
	r.Header.Set("Range", "bytes="+strings.Join(kept, ","))
	return true
}

// isLoopbackConn reports whether r arrived on a loopback address.
func isLoopbackConn(r *http.Request) bool {
	a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return false
	}
	tcp, ok := a.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}

// contentError answers a request whose content could not be read: a file
// missing from the bundle is 404 (code), damaged or unreadable content 500.
// Both are logged with the artifact the content belongs to.
func (s *Server) contentError(w http.ResponseWriter, r *http.Request, repo *repository, h v1.Hash, err error, code string) {
	artifact := repo.blobs[h].artifact
	if artifact == "" {
		artifact = repo.name
	}
	var de *bundle.DigestError
	switch {
	case errors.As(err, &de):
		s.log.Error("corrupted content in the bundle: not served", "blob", h.String(), "artifact", artifact, "err", err)
		writeError(w, r, http.StatusInternalServerError, codeCorrupted, "content in the bundle does not match its digest", map[string]string{"digest": h.String(), "artifact": artifact})
	case errors.Is(err, fs.ErrNotExist):
		s.log.Warn("content missing from the bundle", "blob", h.String(), "artifact", artifact)
		writeError(w, r, http.StatusNotFound, code, "content missing from the bundle", map[string]string{"digest": h.String()})
	default:
		s.log.Error("reading the bundle", "blob", h.String(), "artifact", artifact, "err", err)
		writeError(w, r, http.StatusInternalServerError, codeInternal, "reading the bundle failed", map[string]string{"digest": h.String()})
	}
}

// serveTags answers a tag list, paginated by n and last.
func (s *Server) serveTags(w http.ResponseWriter, r *http.Request, repo *repository, name string) {
	page, next, ok := paginate(w, r, repo.tagList)
	if !ok {
		return
	}
	if next != "" {
		setNextLink(w, "/v2/"+name+"/tags/list", r.URL.Query(), next)
	}
	b, _ := json.Marshal(struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}{name, page})
	writeJSON(w, r, "application/json", b)
}

// serveCatalog lists the repositories by their full names (each can be
// pulled with the registry in the path).
func (s *Server) serveCatalog(w http.ResponseWriter, r *http.Request) {
	page, next, ok := paginate(w, r, s.cat.names)
	if !ok {
		return
	}
	if next != "" {
		setNextLink(w, "/v2/_catalog", r.URL.Query(), next)
	}
	b, _ := json.Marshal(struct {
		Repositories []string `json:"repositories"`
	}{page})
	writeJSON(w, r, "application/json", b)
}

// serveReferrers answers the referrers API: an OCI index of the manifests
// whose subject is the digest, filtered by artifactType when asked.
func (s *Server) serveReferrers(w http.ResponseWriter, r *http.Request, repo *repository, dgst string) {
	algo, _, ok := parseDigest(dgst)
	if !ok {
		writeError(w, r, http.StatusBadRequest, codeDigestInvalid, "invalid digest", map[string]string{"digest": dgst})
		return
	}
	var refs []v1.Descriptor
	if algo == "sha256" {
		h, _ := v1.NewHash(dgst)
		refs = repo.referrers[h]
	}
	if at := r.URL.Query().Get("artifactType"); at != "" {
		w.Header().Set("OCI-Filters-Applied", "artifactType")
		var kept []v1.Descriptor
		for _, d := range refs {
			if d.ArtifactType == at {
				kept = append(kept, d)
			}
		}
		refs = kept
	}
	if refs == nil {
		refs = []v1.Descriptor{}
	}
	b, _ := json.Marshal(v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: refs})
	writeJSON(w, r, string(types.OCIImageIndex), b)
}

// paginate applies the n and last parameters to a sorted list. next is the
// last item of the page when more follow.
func paginate(w http.ResponseWriter, r *http.Request, all []string) (page []string, next string, ok bool) {
	q := r.URL.Query()
	if last := q.Get("last"); last != "" {
		i := 0
		for i < len(all) && all[i] <= last {
			i++
		}
		all = all[i:]
	}
	page = all
	if ns := q.Get("n"); ns != "" {
		n, err := strconv.Atoi(ns)
		if err != nil || n < 0 {
			writeError(w, r, http.StatusBadRequest, codePagination, "invalid number of results requested", map[string]string{"n": ns})
			return nil, "", false
		}
		if n < len(all) {
			page = all[:n]
			if n > 0 {
				next = page[n-1]
			}
		}
	}
	if page == nil {
		page = []string{}
	}
	return page, next, true
}

// setNextLink sets the Link header that points at the next page.
func setNextLink(w http.ResponseWriter, path string, q url.Values, last string) {
	v := url.Values{}
	for k, vs := range q {
		v[k] = vs
	}
	v.Set("last", last)
	w.Header().Set("Link", fmt.Sprintf(`<%s?%s>; rel="next"`, path, v.Encode()))
}

// writeJSON answers 200 with a small body (none for HEAD).
func writeJSON(w http.ResponseWriter, r *http.Request, contentType string, b []byte) {
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(b)
	}
}

// recorder remembers the status and size of a response for the request
// log. It keeps io.ReaderFrom so that blobs still go out by sendfile.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (rec *recorder) WriteHeader(code int) {
	rec.status = code
	rec.ResponseWriter.WriteHeader(code)
}

func (rec *recorder) Write(b []byte) (int, error) {
	n, err := rec.ResponseWriter.Write(b)
	rec.bytes += int64(n)
	return n, err
}

func (rec *recorder) ReadFrom(src io.Reader) (int64, error) {
	var n int64
	var err error
	if rf, ok := rec.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(src)
	} else {
		n, err = io.Copy(rec.ResponseWriter, src)
	}
	rec.bytes += n
	return n, err
}

func (rec *recorder) Unwrap() http.ResponseWriter { return rec.ResponseWriter }

// ListenAndServe serves s on addr until ctx ends, then shuts down,
// letting requests in flight finish for up to five seconds. ready, when
// not nil, is called with the address actually listened on.
func ListenAndServe(ctx context.Context, addr string, h http.Handler, ready func(addr string)) error {
	return listenAndServe(ctx, addr, h, ready)
}
