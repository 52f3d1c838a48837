// Package registrytest runs a real OCI registry — distribution's
// (github.com/distribution/distribution/v3), the registry Harbor itself
// embeds — in-process on 127.0.0.1 with its filesystem storage in a
// temporary folder, for tests and benchmarks.
package registrytest

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem" // registers "filesystem"
	"github.com/sirupsen/logrus"
)

var quiet sync.Once

// Registry is a running registry.
type Registry struct {
	Server  *httptest.Server
	Host    string       // 127.0.0.1:port
	Handler http.Handler // the registry itself, without any wrapper
	Root    string       // storage folder
}

// Option configures New.
type Option func(*settings)

type settings struct {
	wrap func(http.Handler) http.Handler
}

// WithWrapper puts a handler in front of the registry (a Harbor double, a
// fault injector).
func WithWrapper(fn func(next http.Handler) http.Handler) Option {
	return func(s *settings) { s.wrap = fn }
}

// New starts a registry that stops when the test ends.
func New(t testing.TB, opts ...Option) *Registry {
	t.Helper()
	var s settings
	for _, o := range opts {
		o(&s)
	}
	quiet.Do(func() {
		logrus.SetOutput(io.Discard)
		logrus.SetLevel(logrus.ErrorLevel)
	})
	root := t.TempDir()
	cfg := &configuration.Configuration{
		Storage: configuration.Storage{
			"filesystem":  configuration.Parameters{"rootdirectory": root},
			"maintenance": configuration.Parameters{"uploadpurging": map[any]any{"enabled": false}},
			"delete":      configuration.Parameters{"enabled": true},
		},
	}
	cfg.HTTP.Secret = "registrytest-secret"
	cfg.Log.Level = "error"
	cfg.Log.AccessLog.Disabled = true
	ctx, cancel := context.WithCancel(context.Background())
	app := handlers.NewApp(ctx, cfg)
	var h http.Handler = app
	if s.wrap != nil {
		h = s.wrap(app)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		srv.Close()
		_ = app.Shutdown()
		cancel()
	})
	return &Registry{Server: srv, Host: strings.TrimPrefix(srv.URL, "http://"), Handler: app, Root: root}
}

// Fail returns a wrapper that fails the first n requests that match
// (nil matches every request): status > 0 answers with that status;
// status 0 drops the connection without an answer, as a reset would.
func Fail(match func(*http.Request) bool, n int, status int) func(http.Handler) http.Handler {
	var failed atomic.Int64
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if (match == nil || match(r)) && failed.Add(1) <= int64(n) {
				if status > 0 {
					w.WriteHeader(status)
					return
				}
				if hj, ok := w.(http.Hijacker); ok {
					if conn, _, err := hj.Hijack(); err == nil {
						conn.Close()
						return
					}
				}
				w.WriteHeader(http.StatusBadGateway)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}
