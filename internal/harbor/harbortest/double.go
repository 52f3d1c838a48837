// Package harbortest provides a test double of Harbor: an HTTP handler that
// implements the few project endpoints of Harbor's v2.0 API (ping,
// health, HEAD/POST /projects, GET /projects/{name}) as the published API
// description specifies them, Harbor's token service (/service/token), and
// forwards the registry API (/v2/) to a real registry handler after
// Harbor's checks, answering as Harbor v2.15 does:
//
//   - /v2/ without valid credentials: 401 with a Bearer challenge
//     (realm=SCHEME://HOST/service/token, service="harbor-registry"), or
//     `Basic realm="harbor"` when the request carried an Authorization
//     header;
//   - GET /service/token: a token for the requested scopes, with the actions
//     the user has (none in a project that does not exist; pull only in
//     public projects for anonymous users); wrong or no credentials and no
//     scope: 401 with an empty body;
//   - HEAD or GET in a repository without an Authorization header: 401 with
//     a Bearer challenge naming the scope;
//   - a repository in a project that does not exist: 401 with an empty
//     WWW-Authenticate, and (with a body) UNAUTHORIZED "project X not found";
//   - missing rights: 401 UNAUTHORIZED "unauthorized to access repository:
//     NAME, action: ACTION" with a challenge;
//   - POST /robots (system administrator only), GET /robots?q=name=~P and
//     DELETE /robots/{id}: robot accounts, which log in as "robot$NAME"
//     with the secret the creation answered, and may do only what their
//     permissions list (pull, push per project).
//
// It is a double, not Harbor: no database, no RBAC beyond one user who may
// do everything and the robots it makes, no CSRF, no quotas. Use it to
// check that a client creates projects before pushing, reuses existing
// ones, pushes as a robot account, and surfaces Harbor's errors.
package harbortest

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"

	"kpaas.dev/appliance/internal/harbor"
)

// ProjectsDouble is a Harbor stand-in for project management in front of a
// real registry. Configure its exported fields before serving.
type ProjectsDouble struct {
	// Next serves /v2/ (the registry API), typically a real distribution
	// registry. Nil answers 404 to /v2/.
	Next http.Handler
	// User and Password, when User is set, are the one user: basic auth
	// on the API, and on /v2/ directly or through the token service. With
	// no User every request may do everything (projects are still
	// checked).
	User, Password string
	// CreateError, when set, makes POST /projects fail with this status
	// and Harbor error item (e.g. 403 FORBIDDEN "Only system admin can
	// create project").
	CreateError *ErrorResponse
	// RobotError, when set, makes POST /robots fail likewise.
	RobotError *ErrorResponse

	mu       sync.Mutex
	projects map[string]*harbor.Project
	nextID   int32
	created  []string
	calls    map[string]int
	tokens   map[string]grant
	tokensBy map[string]int // user ("" anonymous) → tokens issued
	robots   map[int64]*robot
	robotID  int64
}

// robot is a robot account: its login, secret and actions per project.
type robot struct {
	harbor.Robot
	actions map[string][]string
}

// grant is what a token issued by the token service allows.
type grant struct {
	user    string              // "" for an anonymous token
	actions map[string][]string // repository → actions (pull, push)
}

// ErrorResponse is a status plus one Harbor error item.
type ErrorResponse struct {
	Status int
	harbor.ErrorItem
}

// NewProjectsDouble returns a double in front of next, holding the given
// projects already (Harbor always has "library").
func NewProjectsDouble(next http.Handler, existing ...string) *ProjectsDouble {
	d := &ProjectsDouble{Next: next, projects: map[string]*harbor.Project{}, calls: map[string]int{}, tokens: map[string]grant{},
		tokensBy: map[string]int{}, robots: map[int64]*robot{}}
	for _, name := range append([]string{"library"}, existing...) {
		d.addLocked(name, "true")
	}
	return d
}

func (d *ProjectsDouble) addLocked(name, public string) *harbor.Project {
	d.nextID++
	p := &harbor.Project{ProjectID: d.nextID, Name: name, OwnerName: "admin", Metadata: harbor.ProjectMetadata{Public: public}}
	d.projects[name] = p
	return p
}

// Created lists the projects created through POST /projects, in order.
func (d *ProjectsDouble) Created() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.created...)
}

// Project returns a copy of the named project, if it exists.
func (d *ProjectsDouble) Project(name string) (harbor.Project, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	p, ok := d.projects[name]
	if !ok {
		return harbor.Project{}, false
	}
	return *p, true
}

// Calls counts the API operations served, by operationId of the API
// description (headProject, createProject, getProject, getPing, getHealth),
// and "token" for the token service.
func (d *ProjectsDouble) Calls(op string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.calls[op]
}

// TokensFor counts the tokens the token service issued to user (a robot
// by its login "robot$NAME"; "" anonymous).
func (d *ProjectsDouble) TokensFor(user string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.tokensBy[user]
}

// Robots lists the robot accounts that exist now.
func (d *ProjectsDouble) Robots() []harbor.Robot {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []harbor.Robot
	for _, r := range d.robots {
		out = append(out, harbor.Robot{ID: r.ID, Name: r.Name, ExpiresAt: r.ExpiresAt})
	}
	return out
}

func (d *ProjectsDouble) count(op string) {
	d.mu.Lock()
	d.calls[op]++
	d.mu.Unlock()
}

// ServeHTTP implements http.Handler.
func (d *ProjectsDouble) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	switch {
	case path == harbor.APIPath+"/ping" && r.Method == http.MethodGet:
		d.count("getPing")
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprint(w, "Pong")
	case path == harbor.APIPath+"/health" && r.Method == http.MethodGet:
		d.count("getHealth")
		writeJSON(w, http.StatusOK, harbor.Health{Status: "healthy", Components: []harbor.ComponentHealth{
			{Name: "core", Status: "healthy"}, {Name: "registry", Status: "healthy"}, {Name: "database", Status: "healthy"},
		}})
	case strings.HasPrefix(path, harbor.APIPath+"/"):
		if !d.authorized(r) {
			writeErr(w, r, http.StatusUnauthorized, "UNAUTHORIZED", "unauthorized")
			return
		}
		d.serveAPI(w, r, strings.TrimPrefix(path, harbor.APIPath))
	case path == TokenPath && r.Method == http.MethodGet:
		d.count("token")
		d.serveToken(w, r)
	case path == "/v2" || strings.HasPrefix(path, "/v2/"):
		d.serveRegistry(w, r)
	default:
		http.NotFound(w, r)
	}
}

func (d *ProjectsDouble) authorized(r *http.Request) bool {
	if d.User == "" {
		return true
	}
	u, p, ok := r.BasicAuth()
	return ok && u == d.User && p == d.Password
}

func (d *ProjectsDouble) serveAPI(w http.ResponseWriter, r *http.Request, path string) {
	switch {
	case path == "/projects" && r.Method == http.MethodHead:
		d.count("headProject")
		name := r.URL.Query().Get("project_name")
		if name == "" {
			writeErr(w, r, http.StatusBadRequest, "BAD_REQUEST", "project_name in query is required")
			return
		}
		if _, ok := d.Project(name); !ok {
			writeErr(w, r, http.StatusNotFound, "NOT_FOUND", fmt.Sprintf("project %s not found", name))
			return
		}
		w.WriteHeader(http.StatusOK)
	case path == "/projects" && r.Method == http.MethodPost:
		d.count("createProject")
		d.createProject(w, r)
	case strings.HasPrefix(path, "/projects/") && !strings.Contains(path[len("/projects/"):], "/") && r.Method == http.MethodGet:
		d.count("getProject")
		key := path[len("/projects/"):]
		d.mu.Lock()
		p, ok := d.projects[key]
		if !ok && r.Header.Get("X-Is-Resource-Name") != "true" {
			if id, err := strconv.Atoi(key); err == nil {
				for _, q := range d.projects {
					if int(q.ProjectID) == id {
						p, ok = q, true
					}
				}
			}
		}
		var cp harbor.Project
		if ok {
			cp = *p
		}
		d.mu.Unlock()
		if !ok {
			writeErr(w, r, http.StatusNotFound, "NOT_FOUND", fmt.Sprintf("project %s not found", key))
			return
		}
		writeJSON(w, http.StatusOK, cp)
	case path == "/robots" && r.Method == http.MethodPost:
		d.count("CreateRobot")
		d.createRobot(w, r)
	case path == "/robots" && r.Method == http.MethodGet:
		d.count("ListRobot")
		prefix, _ := strings.CutPrefix(r.URL.Query().Get("q"), "name=~")
		var out []harbor.Robot
		for _, rb := range d.Robots() {
			if strings.HasPrefix(strings.TrimPrefix(rb.Name, harbor.RobotLogin), prefix) {
				out = append(out, rb)
			}
		}
		writeJSON(w, http.StatusOK, out)
	case strings.HasPrefix(path, "/robots/") && r.Method == http.MethodDelete:
		d.count("DeleteRobot")
		id, _ := strconv.ParseInt(path[len("/robots/"):], 10, 64)
		d.mu.Lock()
		_, ok := d.robots[id]
		delete(d.robots, id)
		d.mu.Unlock()
		if !ok {
			writeErr(w, r, http.StatusNotFound, "NOT_FOUND", fmt.Sprintf("robot %d not found", id))
			return
		}
		w.WriteHeader(http.StatusOK)
	default:
		writeErr(w, r, http.StatusNotFound, "NOT_FOUND", "no such API in the projects double: "+r.Method+" "+path)
	}
}

func (d *ProjectsDouble) createProject(w http.ResponseWriter, r *http.Request) {
	var req struct {
		ProjectName string                  `json:"project_name"`
		Public      *bool                   `json:"public"`
		Metadata    *harbor.ProjectMetadata `json:"metadata"`
	}
	dec := json.NewDecoder(r.Body)
	if err := dec.Decode(&req); err != nil {
		writeErr(w, r, http.StatusBadRequest, "BAD_REQUEST", "parsing project: "+err.Error())
		return
	}
	if d.CreateError != nil {
		writeErr(w, r, d.CreateError.Status, d.CreateError.Code, d.CreateError.Message)
		return
	}
	if req.ProjectName == "" || len(req.ProjectName) > harbor.MaxProjectNameLen {
		writeErr(w, r, http.StatusBadRequest, "UNPROCESSABLE_ENTITY", "validation failure: project_name in body should be at most 255 chars long and not empty")
		return
	}
	if !harbor.ValidProjectName(req.ProjectName) {
		writeErr(w, r, http.StatusBadRequest, "BAD_REQUEST", fmt.Sprintf("project name %s is invalid", req.ProjectName))
		return
	}
	public := "false"
	if req.Public != nil {
		public = strconv.FormatBool(*req.Public)
	}
	if req.Metadata != nil && req.Metadata.Public != "" {
		public = req.Metadata.Public
	}
	if public != "true" && public != "false" {
		writeErr(w, r, http.StatusBadRequest, "BAD_REQUEST", fmt.Sprintf("metadata.public should only be 'true' or 'false', but got: '%s'", public))
		return
	}
	d.mu.Lock()
	if _, ok := d.projects[req.ProjectName]; ok {
		d.mu.Unlock()
		writeErr(w, r, http.StatusConflict, "CONFLICT", fmt.Sprintf("The project named %s already exists", req.ProjectName))
		return
	}
	p := d.addLocked(req.ProjectName, public)
	d.created = append(d.created, req.ProjectName)
	d.mu.Unlock()
	w.Header().Set("Location", fmt.Sprintf("%s/projects/%d", harbor.APIPath, p.ProjectID))
	w.WriteHeader(http.StatusCreated)
}

// createRobot makes a robot account as Harbor does: a name of the
// registry's grammar, level system or project, a duration of -1 or a
// positive number of days, project permissions; its login is
// "robot$NAME", its secret random.
func (d *ProjectsDouble) createRobot(w http.ResponseWriter, r *http.Request) {
	var req harbor.RobotCreate
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeErr(w, r, http.StatusBadRequest, "BAD_REQUEST", "parsing robot: "+err.Error())
		return
	}
	if d.RobotError != nil {
		writeErr(w, r, d.RobotError.Status, d.RobotError.Code, d.RobotError.Message)
		return
	}
	switch {
	case !harbor.ValidProjectName(req.Name):
		writeErr(w, r, http.StatusBadRequest, "BAD_REQUEST", fmt.Sprintf("robot name is not in lower case or contains illegal characters: %s", req.Name))
		return
	case req.Level != "system" && req.Level != "project":
		writeErr(w, r, http.StatusBadRequest, "BAD_REQUEST", "bad request robot level")
		return
	case req.Duration == 0 || req.Duration < -1:
		writeErr(w, r, http.StatusBadRequest, "BAD_REQUEST", fmt.Sprintf("bad request error duration input: %d, duration must be either -1(Never) or a positive integer", req.Duration))
		return
	}
	rb := &robot{Robot: harbor.Robot{Name: harbor.RobotLogin + req.Name}, actions: map[string][]string{}}
	for _, p := range req.Permissions {
		for _, a := range p.Access {
			if p.Kind == "project" && a.Resource == "repository" {
				rb.actions[p.Namespace] = append(rb.actions[p.Namespace], a.Action)
			}
		}
	}
	d.mu.Lock()
	for _, other := range d.robots {
		if other.Name == rb.Name {
			d.mu.Unlock()
			writeErr(w, r, http.StatusConflict, "CONFLICT", fmt.Sprintf("robot account %s already exists", rb.Name))
			return
		}
	}
	d.robotID++
	rb.ID = d.robotID
	rb.Secret = rand.Text()
	d.robots[rb.ID] = rb
	d.mu.Unlock()
	writeJSON(w, http.StatusCreated, rb.Robot)
}

// TokenPath is where Harbor's token service answers; TokenService is the
// service name its challenges carry.
const (
	TokenPath    = "/service/token"
	TokenService = "harbor-registry"
)

// basicUser returns the user (or robot login) of valid basic
// credentials.
func (d *ProjectsDouble) basicUser(r *http.Request) (string, bool) {
	u, p, ok := r.BasicAuth()
	if !ok || d.User == "" {
		return "", false
	}
	if u == d.User && p == d.Password {
		return u, true
	}
	if rb := d.robot(u); rb != nil && rb.Secret == p {
		return u, true
	}
	return "", false
}

// robot is the robot account whose login is name, or nil.
func (d *ProjectsDouble) robot(name string) *robot {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, rb := range d.robots {
		if rb.Name == name {
			return rb
		}
	}
	return nil
}

// serveToken issues a token for the requested scopes, as Harbor's token
// service does: the credentials decide the user (wrong ones make an
// anonymous request), and each repository scope gets the actions the user
// has in it.
func (d *ProjectsDouble) serveToken(w http.ResponseWriter, r *http.Request) {
	user, authenticated := d.basicUser(r)
	var scopes []string
	for _, s := range r.URL.Query()["scope"] {
		scopes = append(scopes, strings.Fields(s)...)
	}
	if !authenticated && len(scopes) == 0 {
		w.WriteHeader(http.StatusUnauthorized) // Harbor: CustomAbort(401, "")
		return
	}
	g := grant{user: user, actions: map[string][]string{}}
	for _, sc := range scopes {
		typ, rest, _ := strings.Cut(sc, ":")
		i := strings.LastIndex(rest, ":")
		if typ != "repository" || i < 0 {
			continue
		}
		repo, wanted := rest[:i], strings.Split(rest[i+1:], ",")
		for _, a := range wanted {
			if d.may(user, repo, a) {
				g.actions[repo] = append(g.actions[repo], a)
			}
		}
	}
	d.mu.Lock()
	tok := fmt.Sprintf("harbor-double-token-%d", len(d.tokens)+1)
	d.tokens[tok] = g
	d.tokensBy[user]++
	d.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"token": tok, "expires_in": 1800})
}

// may reports whether user ("" anonymous) may do action in repo: the user
// may do everything in existing projects, anonymous users pull from public
// ones.
func (d *ProjectsDouble) may(user, repo, action string) bool {
	project, _, _ := strings.Cut(repo, "/")
	p, ok := d.Project(project)
	if !ok {
		return false
	}
	if rb := d.robot(user); rb != nil {
		return slices.Contains(rb.actions[project], action) || (action == "pull" && p.Metadata.Public == "true")
	}
	if user != "" || d.User == "" {
		return true
	}
	return action == "pull" && p.Metadata.Public == "true"
}

// caller finds who sends r: ok is false for credentials that are wrong
// (basic) or unknown (bearer).
func (d *ProjectsDouble) caller(r *http.Request) (g grant, ok bool) {
	if d.User == "" {
		return grant{user: "anyone"}, true
	}
	auth := r.Header.Get("Authorization")
	if tok, isBearer := strings.CutPrefix(auth, "Bearer "); isBearer {
		d.mu.Lock()
		g, ok = d.tokens[tok]
		d.mu.Unlock()
		return g, ok
	}
	if user, valid := d.basicUser(r); valid {
		return grant{user: user}, true
	}
	return grant{}, auth == ""
}

// allows reports whether g may do action in repo.
func (d *ProjectsDouble) allows(g grant, repo, action string) bool {
	if g.actions == nil { // basic auth, or no credentials configured
		return d.may(g.user, repo, action)
	}
	for _, a := range g.actions[repo] {
		if a == action {
			return true
		}
	}
	return false
}

// challenge is what Harbor offers: Basic when the request carried
// credentials, else its token service, with the scope when known.
func challenge(r *http.Request, scope string) string {
	if r.Header.Get("Authorization") != "" {
		return `Basic realm="harbor"`
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	c := fmt.Sprintf(`Bearer realm="%s://%s%s",service="%s"`, scheme, r.Host, TokenPath, TokenService)
	if scope != "" {
		c += fmt.Sprintf(`,scope="%s"`, scope)
	}
	return c
}

// unauthorized answers 401 with Harbor's error body and the challenge
// (which may be empty, as Harbor's is for a missing project).
func unauthorized(w http.ResponseWriter, r *http.Request, challenge, msg string) {
	w.Header().Set("Docker-Distribution-Api-Version", "registry/2.0")
	w.Header()["Www-Authenticate"] = []string{challenge}
	writeErr(w, r, http.StatusUnauthorized, "UNAUTHORIZED", msg)
}

// repoRequest splits a repository path of the registry API into the
// repository name and what the request needs (pull or push).
func repoRequest(r *http.Request, rest string) (repo, action string, ok bool) {
	for _, sep := range []string{"/manifests/", "/blobs/", "/tags/", "/referrers/"} {
		if i := strings.Index(rest, sep); i > 0 {
			action = "pull"
			if r.Method != http.MethodGet && r.Method != http.MethodHead {
				action = "push"
			}
			return rest[:i], action, true
		}
	}
	return "", "", false
}

// serveRegistry forwards /v2/ to Next after Harbor's checks (see the
// package comment).
func (d *ProjectsDouble) serveRegistry(w http.ResponseWriter, r *http.Request) {
	g, known := d.caller(r)
	rest := strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, "/v2"), "/")
	switch {
	case rest == "":
		if !known || g.user == "" {
			unauthorized(w, r, challenge(r, ""), "unauthorized")
			return
		}
	case rest == "_catalog":
		if !known || g.user == "" {
			unauthorized(w, r, `Basic realm="harbor"`, "unauthorized to list catalog")
			return
		}
	default:
		repo, action, ok := repoRequest(r, rest)
		if !ok {
			writeErr(w, r, http.StatusNotFound, "NOT_FOUND", "not found")
			return
		}
		scope := "repository:" + repo + ":" + action
		if r.Header.Get("Authorization") == "" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
			unauthorized(w, r, challenge(r, scope), "authorize header needed to send HEAD to repository")
			return
		}
		project, _, _ := strings.Cut(repo, "/")
		if _, ok := d.Project(project); !ok {
			unauthorized(w, r, "", fmt.Sprintf("project %s not found", project))
			return
		}
		allowed := known && d.allows(g, repo, action)
		if from := r.URL.Query().Get("from"); allowed && from != "" && r.URL.Query().Get("mount") != "" {
			allowed = d.allows(g, from, "pull")
		}
		if !allowed {
			unauthorized(w, r, challenge(r, scope), fmt.Sprintf("unauthorized to access repository: %s, action: %s", repo, action))
			return
		}
	}
	if d.Next == nil {
		http.NotFound(w, r)
		return
	}
	d.Next.ServeHTTP(w, r)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	if r.Method == http.MethodHead {
		w.WriteHeader(status)
		return
	}
	writeJSON(w, status, map[string]any{"errors": []harbor.ErrorItem{{Code: code, Message: msg}}})
}
