// Package harbor is a small client for the few Harbor v2.0 REST endpoints
// that pushing a bundle needs: ping, health, projects (exists, get,
// create) and robot accounts (create, list, delete). It was written from
// Harbor's published API description (api/v2.0/swagger.yaml; base path
// /api/v2.0, basic authentication).
//
// Requests authenticate with HTTP basic auth, which Harbor accepts for API
// calls without a CSRF token. Every request has a timeout, and transient
// failures (5xx, 429, resets, timeouts) are retried with backoff. Harbor's
// error body {"errors":[{"code","message"}]} is surfaced verbatim in
// *Error.
package harbor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"kpaas.dev/appliance/internal/retry"
)

// APIPath is the base path of Harbor's v2.0 REST API.
const APIPath = "/api/v2.0"

// Client talks to one Harbor instance. It is safe for concurrent use.
type Client struct {
	base     *url.URL // scheme://host[:port]/api/v2.0
	hc       *http.Client
	user     string
	password string
	timeout  time.Duration
	policy   retry.Policy
}

// Option configures a Client.
type Option func(*Client)

// WithBasicAuth sets the credentials sent with every request.
func WithBasicAuth(user, password string) Option {
	return func(c *Client) { c.user, c.password = user, password }
}

// WithHTTPClient sets the HTTP client (transport, TLS settings).
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// WithTimeout bounds each request (default 30s).
func WithTimeout(d time.Duration) Option { return func(c *Client) { c.timeout = d } }

// WithRetry sets the retry policy for transient failures (default retry.Default).
func WithRetry(p retry.Policy) Option { return func(c *Client) { c.policy = p } }

// New returns a client for the Harbor at baseURL ("https://harbor.example",
// with or without the /api/v2.0 suffix).
func New(baseURL string, opts ...Option) (*Client, error) {
	u, err := url.Parse(strings.TrimSuffix(baseURL, "/"))
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("harbor: invalid URL %q", baseURL)
	}
	if !strings.HasSuffix(u.Path, APIPath) {
		u.Path += APIPath
	}
	c := &Client{base: u, hc: http.DefaultClient, timeout: 30 * time.Second, policy: retry.Default}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// Error is a failed Harbor API call: the HTTP status and Harbor's error
// list, verbatim.
type Error struct {
	Method, Path string
	Status       int
	Errors       []ErrorItem // from the body; empty if the body was not Harbor's format
	Body         string      // the raw body (truncated) when it was not Harbor's format
	retryAfter   time.Duration
}

// ErrorItem is one entry of Harbor's error body.
type ErrorItem struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "harbor: %s %s: %d %s", e.Method, e.Path, e.Status, http.StatusText(e.Status))
	for _, it := range e.Errors {
		fmt.Fprintf(&b, ": %s: %s", it.Code, it.Message)
	}
	if len(e.Errors) == 0 && e.Body != "" {
		fmt.Fprintf(&b, ": %s", e.Body)
	}
	return b.String()
}

// StatusCode lets retry classify the error.
func (e *Error) StatusCode() int { return e.Status }

// RetryAfter is the server's Retry-After, if it sent one.
func (e *Error) RetryAfter() time.Duration { return e.retryAfter }

// IsStatus reports whether err is a Harbor *Error with the given status.
func IsStatus(err error, status int) bool {
	var he *Error
	return errors.As(err, &he) && he.Status == status
}

// do performs one API call with retries. body is JSON-encoded when not
// nil; out, when not nil, receives the decoded 2xx response. hdr adds
// request headers.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, hdr http.Header, body, out any) (*http.Response, error) {
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return nil, err
		}
	}
	u := *c.base
	u.Path += path
	u.RawQuery = query.Encode()
	var resp *http.Response
	err := retry.Do(ctx, c.policy, func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, c.timeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(payload))
		if err != nil {
			return err
		}
		if body == nil {
			req.Body, req.ContentLength = http.NoBody, 0
		} else {
			req.Header.Set("Content-Type", "application/json")
		}
		req.Header.Set("Accept", "application/json")
		for k, vs := range hdr {
			req.Header[k] = vs
		}
		if c.user != "" || c.password != "" {
			req.SetBasicAuth(c.user, c.password)
		}
		r, err := c.hc.Do(req)
		if err != nil {
			return err // classified by retry.Transient
		}
		defer r.Body.Close()
		raw, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			return fmt.Errorf("harbor: %s %s: reading response: %w", method, path, err)
		}
		if r.StatusCode >= 300 {
			return newError(method, path, r, raw)
		}
		resp = r
		if out != nil && len(raw) > 0 {
			if err := json.Unmarshal(raw, out); err != nil {
				return fmt.Errorf("harbor: %s %s: decoding response: %w", method, path, err)
			}
		}
		return nil
	})
	return resp, err
}

func newError(method, path string, r *http.Response, raw []byte) *Error {
	e := &Error{Method: method, Path: path, Status: r.StatusCode}
	var eb struct {
		Errors []ErrorItem `json:"errors"`
	}
	if json.Unmarshal(raw, &eb) == nil && len(eb.Errors) > 0 {
		e.Errors = eb.Errors
	} else {
		e.Body = bodyText(r.Header.Get("Content-Type"), raw)
	}
	if s := r.Header.Get("Retry-After"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n >= 0 {
			e.retryAfter = time.Duration(n) * time.Second
		}
	}
	return e
}

// htmlTitle finds an HTML page's title.
var htmlTitle = regexp.MustCompile(`(?is)<title[^>]*>(.*?)</title>`)

// bodyText is a body that is not Harbor's error format as one line of at
// most 512 bytes: an HTML page (the error page of the nginx in front of
// Harbor, say, while core is down) by its title, other text with its runs
// of white space made one space. A multi-line page would otherwise spill
// into logs and records.
func bodyText(contentType string, raw []byte) string {
	s := strings.TrimSpace(string(raw))
	if strings.HasPrefix(contentType, "text/html") || strings.HasPrefix(s, "<") {
		if m := htmlTitle.FindStringSubmatch(s); m != nil {
			s = "HTML page " + strconv.Quote(strings.Join(strings.Fields(m[1]), " "))
		} else {
			s = "HTML page without a title"
		}
	}
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 512 {
		s = strings.ToValidUTF8(s[:512], "") + "…"
	}
	return s
}

// Ping checks that the API server answers (GET /ping, no auth needed).
func (c *Client) Ping(ctx context.Context) error {
	_, err := c.do(ctx, http.MethodGet, "/ping", nil, nil, nil, nil)
	return err
}

// Health is Harbor's OverallHealthStatus.
type Health struct {
	Status     string            `json:"status"`
	Components []ComponentHealth `json:"components"`
}

// ComponentHealth is Harbor's ComponentHealthStatus.
type ComponentHealth struct {
	Name   string `json:"name"`
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
}

// Healthy reports whether Harbor says every component is healthy.
func (h Health) Healthy() bool { return h.Status == "healthy" }

// Health reads GET /health.
func (c *Client) Health(ctx context.Context) (Health, error) {
	var h Health
	_, err := c.do(ctx, http.MethodGet, "/health", nil, nil, nil, &h)
	return h, err
}

// ProjectMetadata is the subset of Harbor's ProjectMetadata the push uses.
// Harbor encodes these booleans as the strings "true" and "false".
type ProjectMetadata struct {
	Public     string  `json:"public,omitempty"`
	AutoScan   *string `json:"auto_scan,omitempty"`
	PreventVul *string `json:"prevent_vul,omitempty"`
}

// ProjectReq is Harbor's ProjectReq (the fields this client sets).
type ProjectReq struct {
	ProjectName  string           `json:"project_name"`
	Public       *bool            `json:"public,omitempty"` // deprecated by Harbor; metadata.public wins
	Metadata     *ProjectMetadata `json:"metadata,omitempty"`
	StorageLimit *int64           `json:"storage_limit,omitempty"`
}

// Project is the subset of Harbor's Project that callers need.
type Project struct {
	ProjectID int32           `json:"project_id"`
	Name      string          `json:"name"`
	OwnerName string          `json:"owner_name,omitempty"`
	RepoCount int             `json:"repo_count"`
	Metadata  ProjectMetadata `json:"metadata"`
}

// ProjectExists asks HEAD /projects?project_name=NAME.
func (c *Client) ProjectExists(ctx context.Context, name string) (bool, error) {
	_, err := c.do(ctx, http.MethodHead, "/projects", url.Values{"project_name": {name}}, nil, nil, nil)
	switch {
	case err == nil:
		return true, nil
	case IsStatus(err, http.StatusNotFound):
		return false, nil
	}
	return false, err
}

// GetProject reads GET /projects/{name} (by name: X-Is-Resource-Name).
func (c *Client) GetProject(ctx context.Context, name string) (*Project, error) {
	var p Project
	hdr := http.Header{"X-Is-Resource-Name": {"true"}}
	if _, err := c.do(ctx, http.MethodGet, "/projects/"+url.PathEscape(name), nil, hdr, nil, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// Artifact is the subset of Harbor's Artifact that callers need.
type Artifact struct {
	Digest    string `json:"digest"`
	MediaType string `json:"manifest_media_type"`
	Size      int64  `json:"size"`
	Tags      []struct {
		Name string `json:"name"`
	} `json:"tags"`
}

// Artifact reads GET /projects/{project}/repositories/{repo}/artifacts/{reference};
// reference is a tag or a digest. Harbor wants the repository name's
// slashes escaped twice; the URL's own escaping does the second time.
func (c *Client) Artifact(ctx context.Context, project, repo, reference string) (*Artifact, error) {
	var a Artifact
	path := "/projects/" + url.PathEscape(project) + "/repositories/" + url.PathEscape(repo) + "/artifacts/" + url.PathEscape(reference)
	if _, err := c.do(ctx, http.MethodGet, path, nil, nil, nil, &a); err != nil {
		return nil, err
	}
	return &a, nil
}

// CreateProject calls POST /projects. A project that already exists is a
// *Error with status 409.
func (c *Client) CreateProject(ctx context.Context, req ProjectReq) error {
	_, err := c.do(ctx, http.MethodPost, "/projects", nil, nil, req, nil)
	return err
}

// EnsureProject creates project name unless it exists, and reports whether
// it created it. A create racing another client (409) counts as existing.
func (c *Client) EnsureProject(ctx context.Context, name string, public bool) (created bool, err error) {
	ok, err := c.ProjectExists(ctx, name)
	if err != nil {
		return false, fmt.Errorf("checking project %q: %w", name, err)
	}
	if ok {
		return false, nil
	}
	req := ProjectReq{ProjectName: name, Metadata: &ProjectMetadata{Public: strconv.FormatBool(public)}}
	switch err := c.CreateProject(ctx, req); {
	case err == nil:
		return true, nil
	case IsStatus(err, http.StatusConflict):
		return false, nil
	default:
		return false, fmt.Errorf("creating project %q: %w", name, err)
	}
}

// MaxProjectNameLen is ProjectReq.project_name's maxLength in the API.
const MaxProjectNameLen = 255

// ValidProjectName reports whether name is a project name Harbor accepts:
// the API description bounds its length (1–255); Harbor's portal and the
// registry's repository grammar restrict it to lower-case letters and
// digits separated by single '.', '_' or '-' (so "docker.io" is valid,
// "quay.io:443" and "Docker.io" are not).
func ValidProjectName(name string) bool {
	if name == "" || len(name) > MaxProjectNameLen {
		return false
	}
	prevSep := true // no separator first
	for i := 0; i < len(name); i++ {
		switch ch := name[i]; {
		case ch >= 'a' && ch <= 'z', ch >= '0' && ch <= '9':
			prevSep = false
		case ch == '.' || ch == '_' || ch == '-':
			if prevSep {
				return false
			}
			prevSep = true
		default:
			return false
		}
	}
	return !prevSep
}

// ProjectNameFor maps an arbitrary string (a registry host such as
// "docker.io" or "registry.local:5000") to a valid project name: lower
// case, every run of other characters replaced by one '-', separators
// trimmed at both ends. Valid names map to themselves.
func ProjectNameFor(s string) string {
	var b strings.Builder
	var pending byte // separator to write before the next letter or digit
	for _, r := range strings.ToLower(s) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			if pending != 0 && b.Len() > 0 {
				b.WriteByte(pending)
			}
			pending = 0
			b.WriteRune(r)
		case pending != 0:
			// keep the first separator of a run
		case r == '.' || r == '_' || r == '-':
			pending = byte(r)
		default:
			pending = '-'
		}
	}
	out := b.String()
	if len(out) > MaxProjectNameLen {
		out = strings.TrimRight(out[:MaxProjectNameLen], "._-")
	}
	return out
}

// RobotCreate is Harbor's RobotCreate: a robot account of Level "system"
// (permissions in any project) or "project", valid Duration days (-1:
// never expires).
type RobotCreate struct {
	Name        string            `json:"name"`
	Description string            `json:"description,omitempty"`
	Level       string            `json:"level"`
	Duration    int64             `json:"duration"`
	Permissions []RobotPermission `json:"permissions"`
}

// RobotPermission grants Access in one Namespace (a project name) of a
// Kind ("project").
type RobotPermission struct {
	Kind      string   `json:"kind"`
	Namespace string   `json:"namespace"`
	Access    []Access `json:"access"`
}

// Access is one action on one resource ("repository", "pull").
type Access struct {
	Resource string `json:"resource"`
	Action   string `json:"action"`
}

// RobotLogin begins every robot account's login: Harbor names a robot
// made as NAME "robot$NAME".
const RobotLogin = "robot$"

// Robot is a robot account as Harbor lists it, and RobotCreated as it
// answers a creation: the full name it logs in with ("robot$NAME") and,
// only then, its secret.
type Robot struct {
	ID        int64  `json:"id"`
	Name      string `json:"name"`
	Secret    string `json:"secret,omitempty"`
	ExpiresAt int64  `json:"expires_at"`
}

// CreateRobot calls POST /robots. Only a system administrator may create
// a system-level robot (403 otherwise); a name in use is 409.
func (c *Client) CreateRobot(ctx context.Context, req RobotCreate) (*Robot, error) {
	var r Robot
	if _, err := c.do(ctx, http.MethodPost, "/robots", nil, nil, req, &r); err != nil {
		return nil, err
	}
	if r.Name == "" || r.Secret == "" {
		return nil, fmt.Errorf("harbor: POST /robots: the answer has no name or secret")
	}
	return &r, nil
}

// Robots lists the robot accounts whose name starts with prefix (GET
// /robots?q=name=~PREFIX, at most 100).
func (c *Client) Robots(ctx context.Context, prefix string) ([]Robot, error) {
	var rs []Robot
	q := url.Values{"q": {"name=~" + prefix}, "page_size": {"100"}}
	if _, err := c.do(ctx, http.MethodGet, "/robots", q, nil, nil, &rs); err != nil {
		return nil, err
	}
	return rs, nil
}

// DeleteRobot calls DELETE /robots/{id}.
func (c *Client) DeleteRobot(ctx context.Context, id int64) error {
	_, err := c.do(ctx, http.MethodDelete, "/robots/"+strconv.FormatInt(id, 10), nil, nil, nil, nil)
	return err
}
