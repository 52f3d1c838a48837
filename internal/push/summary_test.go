package push_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"kpaas.dev/appliance/internal/bundle"
	"kpaas.dev/appliance/internal/push"
	"kpaas.dev/appliance/internal/push/registrytest"
)

// checkNothingArrived: a push that sent nothing says so, in the summary
// line and in the JSON.
func checkNothingArrived(t *testing.T, what string, sum push.Summary, err error, total int) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: push succeeded", what)
	}
	if sum.OK || sum.Images != 0 || sum.Charts != 0 || sum.Failed != total || sum.Total != total || sum.Error == "" {
		t.Errorf("%s: ok %v, %d images, %d charts, %d of %d failed, error %q; want nothing arrived", what, sum.OK, sum.Images, sum.Charts, sum.Failed, sum.Total, sum.Error)
	}
	line := sum.String()
	if strings.HasPrefix(line, "pushed") || !strings.Contains(line, "FAILED") || !strings.Contains(line, "0 of ") {
		t.Errorf("%s: summary %q, want FAILED and 0 arrived", what, line)
	}
	var j map[string]any
	b, _ := json.Marshal(sum)
	json.Unmarshal(b, &j)
	if j["ok"] != false || j["images"] != float64(0) || j["failed"] != float64(total) {
		t.Errorf("%s: JSON %s", what, b)
	}
}

// TestSummaryCountsOnlyWhatArrived: a failed push never reports the
// bundle's artifacts as pushed.
func TestSummaryCountsOnlyWhatArrived(t *testing.T) {
	tb := makeBundle(t, 2048)
	total := len(tb.entries)

	t.Run("wrong password", func(t *testing.T) {
		reg, _ := harborRegistry(t, "docker.io", "quay.io", "registry.k8s.io")
		o := opts(reg.Host, nil)
		o.Username, o.Password = "admin", "not-the-password"
		sum, err := push.Push(context.Background(), tb.store, o)
		checkNothingArrived(t, "wrong password", sum, err, total)
	})
	t.Run("nothing listening", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		host := strings.TrimPrefix(srv.URL, "http://")
		srv.Close()
		sum, err := push.Push(context.Background(), tb.store, opts(host, nil))
		checkNothingArrived(t, "nothing listening", sum, err, total)
	})
	t.Run("interrupted", func(t *testing.T) {
		reg := registrytest.New(t)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		sum, err := push.Push(ctx, tb.store, opts(reg.Host, nil))
		checkNothingArrived(t, "interrupted", sum, err, total)
	})
	t.Run("collision refused", func(t *testing.T) {
		// Two artifacts that --project puts at one repo:tag.
		s, err := bundle.Create(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		w := s.NewWriter()
		a, err := w.WriteImage(context.Background(), image(t, layer(t, 512)))
		if err != nil {
			t.Fatal(err)
		}
		b, err := w.WriteImage(context.Background(), image(t, layer(t, 512)))
		if err != nil {
			t.Fatal(err)
		}
		s.SetEntries([]v1.Descriptor{
			bundle.Annotate(a, bundle.KindImage, "docker.io/library/nginx:1.25"),
			bundle.Annotate(b, bundle.KindImage, "quay.io/library/nginx:1.25"),
		})
		reg := registrytest.New(t)
		o := opts(reg.Host, nil)
		o.Mapping = push.Mapping{Project: "kpaas"}
		sum, err := push.Push(context.Background(), s, o)
		checkNothingArrived(t, "collision", sum, err, 2)
	})
	t.Run("some refused", func(t *testing.T) {
		// The registry refuses every manifest of quay.io (a quota, say).
		reg := registrytest.New(t, registrytest.WithWrapper(registrytest.Fail(func(r *http.Request) bool {
			return r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/quay.io/") && strings.Contains(r.URL.Path, "/manifests/")
		}, 1000, http.StatusForbidden)))
		sum, err := push.Push(context.Background(), tb.store, opts(reg.Host, nil))
		if err == nil || sum.OK {
			t.Fatal("push with refused manifests succeeded")
		}
		arrived := 0
		for _, r := range sum.Results {
			if r.Error == "" {
				arrived++
			}
		}
		if sum.Failed != 1 || sum.Images+sum.Charts != arrived || arrived != total-1 {
			t.Errorf("%d images + %d charts arrived, %d failed; results say %d of %d arrived", sum.Images, sum.Charts, sum.Failed, arrived, total)
		}
		if line := sum.String(); !strings.Contains(line, "FAILED") || !strings.Contains(line, "1 did not") {
			t.Errorf("summary %q", line)
		}
	})
}

// TestWrongPasswordCauseFirst: with a wrong password, the registry's
// refusal is the error, alone: not the failed HTTPS probe before it.
func TestWrongPasswordCauseFirst(t *testing.T) {
	tb := makeBundle(t, 1024)
	reg, _ := harborRegistry(t, "docker.io")
	o := opts(reg.Host, nil) // plain HTTP: the HTTPS probe fails first
	o.Username, o.Password = "admin", "not-the-password"
	_, err := push.Push(context.Background(), tb.store, o)
	if err == nil {
		t.Fatal("push with a wrong password succeeded")
	}
	msg := err.Error()
	if !strings.Contains(msg, `refused user "admin"`) || !strings.Contains(msg, "401") {
		t.Errorf("err = %v, want the refusal of user admin (401)", err)
	}
	if strings.Contains(msg, "HTTPS") || strings.Contains(msg, "https://") {
		t.Errorf("err = %v, want no word of the HTTPS probe", err)
	}
}

// TestMissingProjectNamed: pushing into a Harbor project that does not
// exist names the project and --harbor, as Harbor only answers 401.
func TestMissingProjectNamed(t *testing.T) {
	tb := makeBundle(t, 1024)
	reg, _ := harborRegistry(t) // only "library"
	o := opts(reg.Host, nil)
	o.Username, o.Password = "admin", "Harbor12345"
	_, err := push.Push(context.Background(), tb.store, o)
	if err == nil {
		t.Fatal("push into missing projects succeeded")
	}
	for _, want := range []string{`project "docker.io" does not exist`, `project "quay.io" does not exist`, "--harbor"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v\nwant %q", err, want)
		}
	}
}
