package harbor_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"kpaas.dev/appliance/internal/harbor"
	"kpaas.dev/appliance/internal/harbor/harbortest"
	"kpaas.dev/appliance/internal/retry"
)

func newClient(t *testing.T, h http.Handler, opts ...harbor.Option) *harbor.Client {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	opts = append([]harbor.Option{harbor.WithRetry(retry.Policy{Attempts: 3, Base: time.Millisecond})}, opts...)
	c, err := harbor.New(srv.URL, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestProjects(t *testing.T) {
	ctx := context.Background()
	d := harbortest.NewProjectsDouble(nil, "docker.io")
	d.User, d.Password = "admin", "Harbor12345"
	c := newClient(t, d, harbor.WithBasicAuth("admin", "Harbor12345"))

	if err := c.Ping(ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}
	h, err := c.Health(ctx)
	if err != nil || !h.Healthy() {
		t.Fatalf("health = %+v, %v", h, err)
	}
	if ok, err := c.ProjectExists(ctx, "docker.io"); !ok || err != nil {
		t.Fatalf("ProjectExists(docker.io) = %v, %v", ok, err)
	}
	if ok, err := c.ProjectExists(ctx, "quay.io"); ok || err != nil {
		t.Fatalf("ProjectExists(quay.io) = %v, %v", ok, err)
	}
	for range 2 {
		for _, name := range []string{"docker.io", "quay.io", "registry.k8s.io"} {
			if _, err := c.EnsureProject(ctx, name, true); err != nil {
				t.Fatalf("EnsureProject(%s): %v", name, err)
			}
		}
	}
	if got, want := d.Created(), []string{"quay.io", "registry.k8s.io"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("created %v, want %v (each once, existing reused)", got, want)
	}
	p, err := c.GetProject(ctx, "quay.io")
	if err != nil || p.Name != "quay.io" || p.Metadata.Public != "true" {
		t.Fatalf("GetProject = %+v, %v", p, err)
	}

	err = c.CreateProject(ctx, harbor.ProjectReq{ProjectName: "quay.io"})
	if !harbor.IsStatus(err, http.StatusConflict) || !strings.Contains(err.Error(), "CONFLICT: The project named quay.io already exists") {
		t.Fatalf("duplicate create: %v", err)
	}
	_, err = c.GetProject(ctx, "nope")
	if !harbor.IsStatus(err, http.StatusNotFound) || !strings.Contains(err.Error(), "NOT_FOUND: project nope not found") {
		t.Fatalf("get missing: %v", err)
	}
}

func TestErrorsSurfaceVerbatim(t *testing.T) {
	d := harbortest.NewProjectsDouble(nil)
	d.CreateError = &harbortest.ErrorResponse{Status: http.StatusForbidden,
		ErrorItem: harbor.ErrorItem{Code: "FORBIDDEN", Message: "Only system admin can create project"}}
	c := newClient(t, d)
	_, err := c.EnsureProject(context.Background(), "docker.io", false)
	var he *harbor.Error
	if !errors.As(err, &he) || he.Status != 403 || len(he.Errors) != 1 || he.Errors[0].Message != "Only system admin can create project" {
		t.Fatalf("err = %v", err)
	}
	want := `creating project "docker.io": harbor: POST /projects: 403 Forbidden: FORBIDDEN: Only system admin can create project`
	if err.Error() != want {
		t.Fatalf("err = %q\nwant  %q", err, want)
	}

	d2 := harbortest.NewProjectsDouble(nil)
	d2.User, d2.Password = "admin", "secret"
	bad := newClient(t, d2, harbor.WithBasicAuth("admin", "wrong"))
	if _, err := bad.ProjectExists(context.Background(), "library"); !harbor.IsStatus(err, 401) {
		t.Fatalf("wrong password: %v", err)
	}
}

func TestRetriesTransient(t *testing.T) {
	var n atomic.Int32
	d := harbortest.NewProjectsDouble(nil)
	flaky := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) <= 2 {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, `{"errors":[{"code":"UNKNOWN","message":"database is starting"}]}`)
			return
		}
		d.ServeHTTP(w, r)
	})
	c := newClient(t, flaky)
	if created, err := c.EnsureProject(context.Background(), "ghcr.io", false); err != nil || !created {
		t.Fatalf("EnsureProject = %v, %v", created, err)
	}

	n.Store(-100) // always fail: the last real error comes back
	// The nginx in front of Harbor answers with its own pages while core
	// is down: one line in the error, the page's title, not the page.
	for _, tc := range []struct {
		contentType, body, want string
	}{
		{"text/html", "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n",
			`: 502 Bad Gateway: HTML page "502 Bad Gateway"`},
		{"text/html", "<html><body>bad gateway</body></html>", ": 502 Bad Gateway: HTML page without a title"},
		{"text/plain", "upstream\n  connect error\n", ": 502 Bad Gateway: upstream connect error"},
	} {
		c2 := newClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", tc.contentType)
			w.WriteHeader(http.StatusBadGateway)
			fmt.Fprint(w, tc.body)
		}))
		err := c2.Ping(context.Background())
		if !harbor.IsStatus(err, 502) || !strings.HasSuffix(err.Error(), tc.want) || strings.ContainsAny(err.Error(), "\r\n") {
			t.Errorf("%s body: err = %q, want one line ending in %q", tc.contentType, err, tc.want)
		}
	}
}

func TestProjectNames(t *testing.T) {
	for in, want := range map[string]string{
		"docker.io":           "docker.io",
		"registry.k8s.io":     "registry.k8s.io",
		"localhost:5000":      "localhost-5000",
		"Quay.IO":             "quay.io",
		"my_registry..local:": "my_registry.local",
		"[::1]:5000":          "1-5000",
	} {
		got := harbor.ProjectNameFor(in)
		if got != want || !harbor.ValidProjectName(got) {
			t.Errorf("ProjectNameFor(%q) = %q (valid %v), want %q", in, got, harbor.ValidProjectName(got), want)
		}
	}
	for _, bad := range []string{"", "-a", "a-", "a..b", "A", "a:b", strings.Repeat("a", 256)} {
		if harbor.ValidProjectName(bad) {
			t.Errorf("ValidProjectName(%q) = true", bad)
		}
	}
}

// TestAgainstAPIDescription checks that every call the client makes exists
// in Harbor's published API description with that method, and that the
// request and response fields it uses are defined there.
func TestAgainstAPIDescription(t *testing.T) {
	path := filepath.Join("..", "..", "..", "shared", "data", "harbor", "swagger-v2.0.yaml")
	raw, err := os.ReadFile(path)
	if err != nil {
		// The description is reference data beside the repository, not in
		// it: a plain skip, also in CI.
		t.Skipf("API description not available: %v", err)
	}
	var spec struct {
		BasePath    string                               `json:"basePath"`
		Paths       map[string]map[string]map[string]any `json:"paths"`
		Definitions map[string]struct {
			Properties map[string]any `json:"properties"`
		} `json:"definitions"`
	}
	if err := yaml.Unmarshal(raw, &spec); err != nil {
		t.Fatal(err)
	}
	if spec.BasePath != harbor.APIPath {
		t.Errorf("basePath %q, client uses %q", spec.BasePath, harbor.APIPath)
	}
	for _, op := range []struct{ path, method, id string }{
		{"/ping", "get", "getPing"},
		{"/health", "get", "getHealth"},
		{"/projects", "head", "headProject"},
		{"/projects", "post", "createProject"},
		{"/projects/{project_name_or_id}", "get", "getProject"},
	} {
		o, ok := spec.Paths[op.path][op.method]
		if !ok {
			t.Errorf("%s %s not in the API description", strings.ToUpper(op.method), op.path)
			continue
		}
		if o["operationId"] != op.id {
			t.Errorf("%s %s is %v, want %s", op.method, op.path, o["operationId"], op.id)
		}
	}
	fields := func(v any) []string {
		var out []string
		rt := reflect.TypeOf(v)
		for i := range rt.NumField() {
			if tag, _, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ","); tag != "" && tag != "-" {
				out = append(out, tag)
			}
		}
		return out
	}
	for def, v := range map[string]any{
		"ProjectReq":            harbor.ProjectReq{},
		"Project":               harbor.Project{},
		"ProjectMetadata":       harbor.ProjectMetadata{},
		"Error":                 harbor.ErrorItem{},
		"OverallHealthStatus":   harbor.Health{},
		"ComponentHealthStatus": harbor.ComponentHealth{},
	} {
		props := spec.Definitions[def].Properties
		for _, f := range fields(v) {
			if _, ok := props[f]; !ok {
				t.Errorf("%s.%s is not in the API description", def, f)
			}
		}
	}
	// The metadata booleans are strings in the API.
	b, _ := json.Marshal(harbor.ProjectReq{ProjectName: "x", Metadata: &harbor.ProjectMetadata{Public: "true"}})
	if !strings.Contains(string(b), `"metadata":{"public":"true"}`) {
		t.Errorf("ProjectReq encodes as %s", b)
	}
}

func ExampleClient_EnsureProject() {
	srv := httptest.NewServer(harbortest.NewProjectsDouble(nil))
	defer srv.Close()
	c, _ := harbor.New(srv.URL, harbor.WithBasicAuth("admin", "Harbor12345"))
	created, err := c.EnsureProject(context.Background(), "docker.io", true)
	fmt.Println(created, err)
	created, err = c.EnsureProject(context.Background(), "docker.io", true)
	fmt.Println(created, err)
	// Output:
	// true <nil>
	// false <nil>
}
