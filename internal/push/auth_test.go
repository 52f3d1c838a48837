package push_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"kpaas.dev/appliance/internal/push"
	"kpaas.dev/appliance/internal/push/registrytest"
)

// tokenAuth puts Docker's token authentication in front of a registry, as
// Harbor and most registries do: /v2/ answers 401 with a Bearer challenge,
// /token trades basic credentials for a token. Tokens "expire" when
// generation is bumped.
type tokenAuth struct {
	next       http.Handler
	host       *string
	generation atomic.Int64
	mu         sync.Mutex
	scopes     map[string]int
}

func (a *tokenAuth) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/token" {
		u, p, ok := r.BasicAuth()
		if !ok || u != "robot" || p != "pw" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		a.mu.Lock()
		for _, s := range r.URL.Query()["scope"] {
			a.scopes[s]++
		}
		a.mu.Unlock()
		json.NewEncoder(w).Encode(map[string]string{"token": fmt.Sprintf("tok-%d", a.generation.Load())})
		return
	}
	if r.Header.Get("Authorization") != fmt.Sprintf("Bearer tok-%d", a.generation.Load()) {
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="http://%s/token",service="test-registry"`, *a.host))
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	a.next.ServeHTTP(w, r)
}

func TestBearerTokenAuth(t *testing.T) {
	tb := makeBundle(t, 8<<10)
	var host string
	var auth *tokenAuth
	reg := registrytest.New(t, registrytest.WithWrapper(func(next http.Handler) http.Handler {
		auth = &tokenAuth{next: next, host: &host, scopes: map[string]int{}}
		return auth
	}))
	host = reg.Host

	o := opts(reg.Host, nil)
	o.Username, o.Password = "robot", "wrong"
	if _, err := push.Push(context.Background(), tb.store, o); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("wrong password: err = %v", err)
	}

	// The tokens expire half-way, after the fifth blob upload.
	o.Password = "pw"
	rec := newRecorder(nil)
	rec.after = func(puts, _ int) {
		if puts == 5 {
			auth.generation.CompareAndSwap(0, 1)
		}
	}
	o.Transport = rec
	sum, err := push.Push(context.Background(), tb.store, o)
	if err != nil {
		t.Fatal(err)
	}
	if auth.generation.Load() != 1 {
		t.Fatalf("the token never expired during the test")
	}
	verifyPulled(t, reg.Host, tb, perRegistry, remote.WithAuth(&authn.Basic{Username: "robot", Password: "pw"}))
	auth.mu.Lock()
	defer auth.mu.Unlock()
	if auth.scopes["repository:docker.io/library/nginx:pull,push"] == 0 {
		t.Errorf("no push scope requested for nginx: %v", auth.scopes)
	}
	pullOnly := false
	for s := range auth.scopes {
		pullOnly = pullOnly || strings.HasSuffix(s, ":pull")
	}
	if sum.BlobsMounted > 0 && !pullOnly {
		t.Errorf("mounts without a pull scope on the source: %v", auth.scopes)
	}
	t.Logf("%s; %d retries", sum, sum.Retries)
}
