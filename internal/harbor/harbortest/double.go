// Package harbortest provides a test double of Harbor: an HTTP handler that
// implements the few project endpoints of Harbor's v2.0 API (ping,
// health, HEAD/POST /projects, GET /projects/{name}) as the published API
// description specifies them, and forwards the registry API (/v2/) to a
// real registry handler — refusing pushes into projects that do not exist,
// as Harbor does.
//
// It is a double, not Harbor: no database, no RBAC beyond one basic-auth
// user, no CSRF, no quotas. Use it to check that a client creates projects
// before pushing, reuses existing ones, and surfaces Harbor's errors.
package harbortest

import (
	"encoding/json"
	"fmt"
	"net/http"
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
	// User and Password, when User is set, are required (basic auth) on
	// every call except ping and health.
	User, Password string
	// CreateError, when set, makes POST /projects fail with this status
	// and Harbor error item (e.g. 403 FORBIDDEN "Only system admin can
	// create project").
	CreateError *ErrorResponse

	mu       sync.Mutex
	projects map[string]*harbor.Project
	nextID   int32
	created  []string
	calls    map[string]int
}

// ErrorResponse is a status plus one Harbor error item.
type ErrorResponse struct {
	Status int
	harbor.ErrorItem
}

// NewProjectsDouble returns a double in front of next, holding the given
// projects already (Harbor always has "library").
func NewProjectsDouble(next http.Handler, existing ...string) *ProjectsDouble {
	d := &ProjectsDouble{Next: next, projects: map[string]*harbor.Project{}, calls: map[string]int{}}
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
// description (headProject, createProject, getProject, getPing, getHealth).
func (d *ProjectsDouble) Calls(op string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.calls[op]
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

// serveRegistry forwards /v2/ to Next, after Harbor's checks: credentials
// (when configured) and, for repository paths, an existing project.
func (d *ProjectsDouble) serveRegistry(w http.ResponseWriter, r *http.Request) {
	if d.User != "" && !d.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Basic realm="harbor-double"`)
		writeErr(w, r, http.StatusUnauthorized, "UNAUTHORIZED", "unauthorized to access repository")
		return
	}
	rest := strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, "/v2"), "/")
	if rest != "" && rest != "_catalog" {
		project, _, _ := strings.Cut(rest, "/")
		if _, ok := d.Project(project); !ok {
			writeErr(w, r, http.StatusNotFound, "NOT_FOUND", fmt.Sprintf("project %s not found", project))
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
