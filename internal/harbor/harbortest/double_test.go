package harbortest_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"kpaas.dev/appliance/internal/harbor/harbortest"
)

// TestDoubleAnswersAsHarbor: the registry side answers as Harbor v2.15
// does: Bearer challenges from /service/token, 401 (not 404) for a
// repository in a missing project, with an empty challenge.
func TestDoubleAnswersAsHarbor(t *testing.T) {
	d := harbortest.NewProjectsDouble(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusAccepted) // the registry behind: reached
	}), "docker.io")
	d.User, d.Password = "admin", "Harbor12345"
	srv := httptest.NewServer(d)
	defer srv.Close()

	req := func(method, path, auth string) *http.Response {
		t.Helper()
		r, _ := http.NewRequest(method, srv.URL+path, nil)
		if auth != "" {
			r.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	token := func(user, password, scope string) (string, int) {
		t.Helper()
		r, _ := http.NewRequest(http.MethodGet, srv.URL+harbortest.TokenPath+"?service="+harbortest.TokenService+"&scope="+scope, nil)
		r.SetBasicAuth(user, password)
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var tr struct{ Token string }
		json.NewDecoder(resp.Body).Decode(&tr)
		return tr.Token, resp.StatusCode
	}

	// /v2/ offers Bearer tokens from the token service.
	resp := req(http.MethodGet, "/v2/", "")
	want := `Bearer realm="` + srv.URL + `/service/token",service="harbor-registry"`
	if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("Www-Authenticate") != want {
		t.Errorf("GET /v2/: %d %q, want 401 %q", resp.StatusCode, resp.Header.Get("Www-Authenticate"), want)
	}
	// A wrong password with no scope: 401 from the token service.
	if _, code := token("admin", "wrong", ""); code != http.StatusUnauthorized {
		t.Errorf("token with a wrong password: %d, want 401", code)
	}
	tok, code := token("admin", "Harbor12345", "")
	if code != http.StatusOK || tok == "" {
		t.Fatalf("token: %d %q", code, tok)
	}
	if resp := req(http.MethodGet, "/v2/", "Bearer "+tok); resp.StatusCode != http.StatusAccepted {
		t.Errorf("GET /v2/ with a token: %d", resp.StatusCode)
	}

	// HEAD without credentials: a Bearer challenge naming the scope.
	resp = req(http.MethodHead, "/v2/docker.io/library/nginx/manifests/1.25", "")
	if c := resp.Header.Get("Www-Authenticate"); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(c, `scope="repository:docker.io/library/nginx:pull"`) {
		t.Errorf("HEAD without credentials: %d %q", resp.StatusCode, c)
	}

	// A missing project: 401 with an empty challenge; the POST says why.
	tok, _ = token("admin", "Harbor12345", "repository:nope/app:pull,push")
	resp = req(http.MethodHead, "/v2/nope/app/manifests/1.0", "Bearer "+tok)
	if vs, ok := resp.Header["Www-Authenticate"]; resp.StatusCode != http.StatusUnauthorized || !ok || len(vs) != 1 || vs[0] != "" {
		t.Errorf("HEAD in a missing project: %d, Www-Authenticate %q; want 401 and an empty challenge", resp.StatusCode, vs)
	}
	resp = req(http.MethodPost, "/v2/nope/app/blobs/uploads/", "Bearer "+tok)
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), `"code":"UNAUTHORIZED"`) || !strings.Contains(string(body), "project nope not found") {
		t.Errorf("POST in a missing project: %d %s", resp.StatusCode, body)
	}

	// An existing project with a token for it: through to the registry.
	tok, _ = token("admin", "Harbor12345", "repository:docker.io/library/nginx:pull,push")
	if resp := req(http.MethodPost, "/v2/docker.io/library/nginx/blobs/uploads/", "Bearer "+tok); resp.StatusCode != http.StatusAccepted {
		t.Errorf("POST with a push token: %d", resp.StatusCode)
	}
	// A token without push rights (anonymous, private project): refused
	// with a challenge.
	tok, _ = token("", "", "repository:docker.io/library/nginx:pull,push")
	resp = req(http.MethodPost, "/v2/docker.io/library/nginx/blobs/uploads/", "Bearer "+tok)
	if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("Www-Authenticate") == "" {
		t.Errorf("POST without rights: %d %q", resp.StatusCode, resp.Header.Get("Www-Authenticate"))
	}
}
