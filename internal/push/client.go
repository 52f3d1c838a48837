package push

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"kpaas.dev/appliance/internal/retry"
)

// client is a small OCI distribution API client: just the calls a push
// needs (blob HEAD, mount, monolithic and chunked upload; manifest HEAD and
// PUT), basic or bearer-token auth, and a deadline on every request. It
// retries nothing itself: callers wrap calls in retry.Do.
type client struct {
	base     *url.URL // scheme://host[:port]
	hc       *http.Client
	user     string
	password string
	timeout  time.Duration // per request, plus body time at minRate
	minRate  int64         // bytes/s assumed when sizing a body's deadline
	// anonymous: without credentials, a bearer challenge is not checked
	// at the ping; each repository's pull token is asked for when needed
	// (a registry gives anonymous users those of public repositories).
	anonymous bool

	requests atomic.Int64

	mu      sync.Mutex
	scheme  string // auth scheme the registry asked for: "", "basic", "bearer"
	realm   string
	service string
	tokens  map[string]string // scope set → bearer token
}

// httpError is an unexpected registry response.
type httpError struct {
	Method, Path string
	Status       int
	Detail       string // the registry's {"errors":[…]} codes and messages, or the body
	Challenge    string // the WWW-Authenticate header of a 401
	retryAfter   time.Duration
}

func (e *httpError) Error() string {
	s := fmt.Sprintf("%s %s: %d %s", e.Method, e.Path, e.Status, http.StatusText(e.Status))
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	if p, ok := e.missingProject(); ok {
		return fmt.Sprintf("project %q does not exist in the registry (%s); create it, or push with --harbor, which creates missing projects", p, s)
	}
	return s
}

// missingProject recognises Harbor's answers for a repository in a project
// that does not exist: 401 with an empty WWW-Authenticate (HEAD, GET: no
// body), or 401 UNAUTHORIZED "project X not found" (POST, PUT). A 401 for
// missing rights carries a challenge and is not this.
func (e *httpError) missingProject() (string, bool) {
	if e.Status != http.StatusUnauthorized || e.Challenge != "" {
		return "", false
	}
	rest, ok := strings.CutPrefix(e.Path, "/v2/")
	project, _, more := strings.Cut(rest, "/")
	if !ok || !more || project == "" || project == "_catalog" {
		return "", false
	}
	if e.Detail == "" || strings.Contains(e.Detail, "project "+project+" not found") {
		return project, true
	}
	return "", false
}

func (e *httpError) StatusCode() int           { return e.Status }
func (e *httpError) RetryAfter() time.Duration { return e.retryAfter }

func newHTTPError(req *http.Request, resp *http.Response) *httpError {
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	e := &httpError{Method: req.Method, Path: req.URL.Path, Status: resp.StatusCode}
	if resp.StatusCode == http.StatusUnauthorized {
		e.Challenge = resp.Header.Get("WWW-Authenticate")
	}
	var eb struct {
		Errors []struct{ Code, Message string } `json:"errors"`
	}
	if json.Unmarshal(raw, &eb) == nil && len(eb.Errors) > 0 {
		var parts []string
		for _, it := range eb.Errors {
			parts = append(parts, it.Code+": "+it.Message)
		}
		e.Detail = strings.Join(parts, "; ")
	} else if s := strings.TrimSpace(string(raw)); s != "" {
		if len(s) > 300 {
			s = s[:300] + "…"
		}
		e.Detail = s
	}
	if n, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && n >= 0 {
		e.retryAfter = time.Duration(n) * time.Second
	}
	return e
}

func isStatus(err error, code int) bool {
	var he *httpError
	return errors.As(err, &he) && he.Status == code
}

// newTransport returns the default transport, with certificate checks off
// when insecure is set.
func newTransport(insecure bool) http.RoundTripper {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 32
	t.ResponseHeaderTimeout = 0 // per-request deadlines come from contexts
	if insecure {
		t.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // the user asked for --insecure
	}
	return t
}

// connect finds the registry's scheme and auth challenge with GET /v2/.
// registry is host[:port] or a URL. Without a scheme, https is tried
// first; plain http only when insecure is set.
func (c *client) connect(ctx context.Context, registry string, insecure bool) error {
	schemes := []string{"https"}
	if insecure {
		schemes = append(schemes, "http")
	}
	if s, rest, ok := strings.Cut(registry, "://"); ok {
		schemes, registry = []string{s}, rest
	}
	var errs []error
	for _, s := range schemes {
		c.base = &url.URL{Scheme: s, Host: strings.TrimSuffix(registry, "/")}
		answered, err := c.ping(ctx)
		if err == nil {
			return nil
		}
		if answered {
			// The registry answered on this scheme: its answer (a wrong
			// password, say) is the cause, and the failures of the
			// schemes tried before it are noise.
			return fmt.Errorf("connecting to registry %s: %w", registry, err)
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return fmt.Errorf("connecting to registry %s: %w", registry, errors.Join(errs...))
}

// ping sends GET /v2/ and checks the credentials against the challenge.
// answered reports whether the registry answered over HTTP at all.
func (c *client) ping(ctx context.Context) (answered bool, err error) {
	req, err := c.newRequest(ctx, http.MethodGet, c.base.JoinPath("/v2/").String(), nil)
	if err != nil {
		return false, err
	}
	resp, cancel, err := c.roundTrip(req, 0)
	if err != nil {
		return false, err
	}
	defer cancel()
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return true, nil
	case http.StatusUnauthorized:
		c.setChallenge(resp.Header.Get("WWW-Authenticate"))
		if c.scheme == "bearer" {
			if c.anonymous && c.user == "" && c.password == "" {
				return true, nil
			}
			_, err := c.token(ctx, nil) // check the credentials now
			return true, err
		}
		if c.scheme == "basic" && c.user == "" {
			return true, fmt.Errorf("registry %s wants credentials (basic auth): give --username", c.base.Host)
		}
		return true, c.ping2(ctx)
	}
	return true, newHTTPError(req, resp)
}

// ping2 checks basic credentials once the scheme is known.
func (c *client) ping2(ctx context.Context) error {
	resp, err := c.do(ctx, http.MethodGet, "/v2/", nil, nil, 0)
	if err != nil {
		return err
	}
	if resp.StatusCode == http.StatusUnauthorized {
		err := newHTTPError(resp.Request, resp)
		resp.Body.Close()
		return &credentialsError{user: c.user, err: err}
	}
	resp.Body.Close()
	return nil
}

// credentialsError is a registry refusing the user name and password.
// Callers add which registry.
type credentialsError struct {
	user string
	err  error
}

func (e *credentialsError) Error() string {
	if e.user == "" {
		return fmt.Sprintf("the registry wants credentials: give --username (%v)", e.err)
	}
	return fmt.Sprintf("the registry refused user %q: the user name or password is not right (%v)", e.user, e.err)
}

func (e *credentialsError) Unwrap() error { return e.err }

// setChallenge records a WWW-Authenticate challenge.
func (c *client) setChallenge(h string) {
	scheme, params, _ := strings.Cut(h, " ")
	c.mu.Lock()
	defer c.mu.Unlock()
	switch strings.ToLower(scheme) {
	case "basic":
		c.scheme = "basic"
	case "bearer":
		c.scheme = "bearer"
		for _, kv := range splitParams(params) {
			k, v, _ := strings.Cut(kv, "=")
			v = strings.Trim(v, `"`)
			switch strings.ToLower(strings.TrimSpace(k)) {
			case "realm":
				c.realm = v
			case "service":
				c.service = v
			}
		}
	}
}

// splitParams splits auth-params at commas outside quotes.
func splitParams(s string) []string {
	var out []string
	quoted, start := false, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '"':
			quoted = !quoted
		case ',':
			if !quoted {
				out = append(out, strings.TrimSpace(s[start:i]))
				start = i + 1
			}
		}
	}
	return append(out, strings.TrimSpace(s[start:]))
}

// token returns a bearer token for the scopes, fetching it once.
func (c *client) token(ctx context.Context, scopes []string) (string, error) {
	key := strings.Join(scopes, " ")
	c.mu.Lock()
	tok, ok := c.tokens[key]
	realm, service := c.realm, c.service
	c.mu.Unlock()
	if ok {
		return tok, nil
	}
	u, err := url.Parse(realm)
	if err != nil || realm == "" {
		return "", fmt.Errorf("registry %s: invalid token realm %q", c.base.Host, realm)
	}
	q := u.Query()
	if service != "" {
		q.Set("service", service)
	}
	for _, s := range scopes {
		q.Add("scope", s)
	}
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", err
	}
	if c.user != "" || c.password != "" {
		req.SetBasicAuth(c.user, c.password)
	}
	resp, cancel, err := c.roundTrip(req, 0)
	if err != nil {
		return "", fmt.Errorf("fetching registry token: %w", err)
	}
	defer cancel()
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusUnauthorized {
		return "", &credentialsError{user: c.user, err: fmt.Errorf("token service: %w", newHTTPError(req, resp))}
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("fetching registry token: %w", newHTTPError(req, resp))
	}
	var tr struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tr); err != nil {
		return "", fmt.Errorf("fetching registry token: %w", err)
	}
	tok = tr.Token
	if tok == "" {
		tok = tr.AccessToken
	}
	c.mu.Lock()
	if c.tokens == nil {
		c.tokens = map[string]string{}
	}
	c.tokens[key] = tok
	c.mu.Unlock()
	return tok, nil
}

// useCredentials makes the client ask for its tokens as another user
// (the tokens it holds are the old user's: dropped). Not while requests
// are in flight.
func (c *client) useCredentials(user, password string) {
	c.mu.Lock()
	c.user, c.password, c.tokens = user, password, nil
	c.mu.Unlock()
}

func (c *client) forgetToken(scopes []string) {
	c.mu.Lock()
	delete(c.tokens, strings.Join(scopes, " "))
	c.mu.Unlock()
}

func (c *client) newRequest(ctx context.Context, method, u string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", "kpaas-push")
	return req, nil
}

// roundTrip sends req under a deadline sized for bodyLen bytes. The
// caller must call cancel after closing the response body.
func (c *client) roundTrip(req *http.Request, bodyLen int64) (*http.Response, context.CancelFunc, error) {
	d := c.timeout
	if bodyLen > 0 && c.minRate > 0 {
		d += time.Duration(bodyLen * int64(time.Second) / c.minRate)
	}
	ctx, cancel := context.WithTimeout(req.Context(), d)
	c.requests.Add(1)
	resp, err := c.hc.Do(req.WithContext(ctx))
	if err != nil {
		cancel()
		return nil, func() {}, err
	}
	return resp, cancel, nil
}

type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b cancelBody) Close() error { err := b.ReadCloser.Close(); b.cancel(); return err }

// do sends one request to path (absolute URL or path on the registry)
// with auth for scopes. body may be nil; bodyLen sizes the deadline and
// sets Content-Length. A first 401 drops the cached token (it may have
// expired during a long push): a bodiless request is sent again at once;
// one with a body, which cannot be replayed here, fails with an error
// marked retryable so that the caller's retry re-sends it with a fresh
// token.
func (c *client) do(ctx context.Context, method, path string, hdr http.Header, body io.Reader, bodyLen int64, scopes ...string) (*http.Response, error) {
	u := path
	if !strings.Contains(path, "://") {
		ref, err := url.Parse(path)
		if err != nil {
			return nil, err
		}
		u = c.base.ResolveReference(ref).String()
	}
	for try := 0; ; try++ {
		req, err := c.newRequest(ctx, method, u, body)
		if err != nil {
			return nil, err
		}
		if body != nil {
			req.ContentLength = bodyLen
			if bodyLen == 0 {
				req.Body = http.NoBody
			}
		}
		for k, vs := range hdr {
			req.Header[k] = vs
		}
		if err := c.authorize(ctx, req, scopes); err != nil {
			return nil, err
		}
		resp, cancel, err := c.roundTrip(req, bodyLen)
		if err != nil {
			return nil, err
		}
		resp.Body = cancelBody{resp.Body, cancel}
		if resp.StatusCode == http.StatusUnauthorized && try == 0 {
			c.setChallenge(resp.Header.Get("WWW-Authenticate"))
			c.forgetToken(scopes)
			if body == nil || bodyLen == 0 {
				resp.Body.Close()
				continue
			}
			err := newHTTPError(req, resp)
			resp.Body.Close()
			if err.Challenge == "" {
				// No challenge: not an expired token (Harbor's answer
				// for a missing project); sending again cannot help.
				return nil, err
			}
			return nil, retry.Retryable(err)
		}
		return resp, nil
	}
}

func (c *client) authorize(ctx context.Context, req *http.Request, scopes []string) error {
	c.mu.Lock()
	scheme := c.scheme
	c.mu.Unlock()
	switch scheme {
	case "basic":
		req.SetBasicAuth(c.user, c.password)
	case "bearer":
		tok, err := c.token(ctx, scopes)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	return nil
}

func pushScope(repo string) string { return "repository:" + repo + ":pull,push" }
func pullScope(repo string) string { return "repository:" + repo + ":pull" }

// expect closes resp and returns nil when its status is one of codes, or
// the registry's error.
func expect(resp *http.Response, codes ...int) error {
	defer resp.Body.Close()
	for _, c := range codes {
		if resp.StatusCode == c {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			return nil
		}
	}
	return newHTTPError(resp.Request, resp)
}

// headBlob reports whether repo has blob h.
func (c *client) headBlob(ctx context.Context, repo string, h v1.Hash) (bool, error) {
	resp, err := c.do(ctx, http.MethodHead, "/v2/"+repo+"/blobs/"+h.String(), nil, nil, 0, pushScope(repo))
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return true, nil
	case http.StatusNotFound:
		return false, nil
	}
	return false, newHTTPError(resp.Request, resp)
}

// mount asks the registry to link blob h from repo from into repo. When
// the registry cannot (it answers 202 with an upload session instead),
// mounted is false and location is that session, ready for an upload.
func (c *client) mount(ctx context.Context, repo, from string, h v1.Hash) (mounted bool, location string, err error) {
	q := url.Values{"mount": {h.String()}, "from": {from}}
	resp, err := c.do(ctx, http.MethodPost, "/v2/"+repo+"/blobs/uploads/?"+q.Encode(), nil, strings.NewReader(""), 0, pushScope(repo), pullScope(from))
	if err != nil {
		return false, "", err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusCreated:
		return true, "", nil
	case http.StatusAccepted:
		return false, c.location(resp), nil
	}
	return false, "", newHTTPError(resp.Request, resp)
}

// startUpload opens an upload session in repo.
func (c *client) startUpload(ctx context.Context, repo string) (string, error) {
	resp, err := c.do(ctx, http.MethodPost, "/v2/"+repo+"/blobs/uploads/", nil, strings.NewReader(""), 0, pushScope(repo))
	if err != nil {
		return "", err
	}
	if err := expect(resp, http.StatusAccepted); err != nil {
		return "", err
	}
	loc := c.location(resp)
	if loc == "" {
		return "", fmt.Errorf("POST /v2/%s/blobs/uploads/: no Location in the answer", repo)
	}
	return loc, nil
}

// location resolves a response's Location header against the request URL.
func (c *client) location(resp *http.Response) string {
	loc := resp.Header.Get("Location")
	if loc == "" {
		return ""
	}
	u, err := resp.Request.URL.Parse(loc)
	if err != nil {
		return loc
	}
	return u.String()
}

func withDigest(loc string, h v1.Hash) string {
	u, err := url.Parse(loc)
	if err != nil {
		return loc
	}
	q := u.Query()
	q.Set("digest", h.String())
	u.RawQuery = q.Encode()
	return u.String()
}

var octetStream = http.Header{"Content-Type": {"application/octet-stream"}}

// putBlob uploads the whole blob with one PUT to the session at loc.
func (c *client) putBlob(ctx context.Context, repo, loc string, h v1.Hash, size int64, body io.Reader) error {
	resp, err := c.do(ctx, http.MethodPut, withDigest(loc, h), octetStream, body, size, pushScope(repo))
	if err != nil {
		return err
	}
	return expect(resp, http.StatusCreated)
}

// patchChunk sends bytes [start, start+n) of the blob and returns the
// session's next location.
func (c *client) patchChunk(ctx context.Context, repo, loc string, start, n int64, body io.Reader) (string, error) {
	hdr := http.Header{
		"Content-Type":  {"application/octet-stream"},
		"Content-Range": {fmt.Sprintf("%d-%d", start, start+n-1)},
	}
	resp, err := c.do(ctx, http.MethodPatch, loc, hdr, body, n, pushScope(repo))
	if err != nil {
		return "", err
	}
	next := c.location(resp)
	if err := expect(resp, http.StatusAccepted, http.StatusNoContent); err != nil {
		return "", err
	}
	if next == "" {
		next = loc
	}
	return next, nil
}

// finishUpload closes a chunked session, naming the digest.
func (c *client) finishUpload(ctx context.Context, repo, loc string, h v1.Hash) error {
	resp, err := c.do(ctx, http.MethodPut, withDigest(loc, h), octetStream, strings.NewReader(""), 0, pushScope(repo))
	if err != nil {
		return err
	}
	return expect(resp, http.StatusCreated)
}

var manifestAccept = strings.Join([]string{
	string(types.OCIManifestSchema1), string(types.OCIImageIndex),
	string(types.DockerManifestSchema2), string(types.DockerManifestList),
}, ", ")

// headManifest returns the digest repo's ref (tag or digest) points to,
// or "" when it does not exist, asked with a token for scope (a push's,
// or a pull's for those who only read).
func (c *client) headManifest(ctx context.Context, repo, ref, scope string) (string, error) {
	hdr := http.Header{"Accept": {manifestAccept}}
	resp, err := c.do(ctx, http.MethodHead, "/v2/"+repo+"/manifests/"+ref, hdr, nil, 0, scope)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		d := resp.Header.Get("Docker-Content-Digest")
		if d == "" && strings.HasPrefix(ref, "sha256:") {
			d = ref
		}
		return d, nil
	case http.StatusNotFound:
		return "", nil
	}
	return "", newHTTPError(resp.Request, resp)
}

// putManifest stores raw under repo:ref with its media type.
func (c *client) putManifest(ctx context.Context, repo, ref string, mt types.MediaType, raw []byte) error {
	hdr := http.Header{"Content-Type": {string(mt)}}
	resp, err := c.do(ctx, http.MethodPut, "/v2/"+repo+"/manifests/"+ref, hdr, bytes.NewReader(raw), int64(len(raw)), pushScope(repo))
	if err != nil {
		return err
	}
	return expect(resp, http.StatusCreated, http.StatusOK)
}
