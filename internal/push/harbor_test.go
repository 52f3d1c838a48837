package push_test

import (
	"context"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"kpaas.dev/appliance/internal/harbor"
	"kpaas.dev/appliance/internal/harbor/harbortest"
	"kpaas.dev/appliance/internal/push"
	"kpaas.dev/appliance/internal/push/registrytest"
)

// harborRegistry is the projects double in front of a real registry.
func harborRegistry(t *testing.T, existing ...string) (*registrytest.Registry, *harbortest.ProjectsDouble) {
	var d *harbortest.ProjectsDouble
	reg := registrytest.New(t, registrytest.WithWrapper(func(next http.Handler) http.Handler {
		d = harbortest.NewProjectsDouble(next, existing...)
		d.User, d.Password = "admin", "Harbor12345"
		return d
	}))
	return reg, d
}

func TestPushIntoHarbor(t *testing.T) {
	tb := makeBundle(t, 16<<10)
	reg, d := harborRegistry(t, "docker.io")
	o := opts(reg.Host, nil)
	o.Harbor, o.PublicProjects = true, true
	o.Username, o.Password = "admin", "Harbor12345"
	sum, err := push.Push(context.Background(), tb.store, o)
	if err != nil {
		t.Fatal(err)
	}
	// docker.io existed: reused. The others are created once, before any push
	// (the double refuses pushes into missing projects).
	if want := []string{"quay.io", "registry.k8s.io"}; !reflect.DeepEqual(d.Created(), want) || !reflect.DeepEqual(sum.Projects, want) {
		t.Fatalf("created %v (summary %v), want %v", d.Created(), sum.Projects, want)
	}
	if p, _ := d.Project("quay.io"); p.Metadata.Public != "true" {
		t.Errorf("quay.io public = %q", p.Metadata.Public)
	}
	verifyPulledAuth(t, reg.Host, tb)

	sum, err = push.Push(context.Background(), tb.store, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Created()) != 2 || len(sum.Projects) != 0 || sum.BlobsSent != 0 {
		t.Fatalf("second push created %v, sent %d blobs", sum.Projects, sum.BlobsSent)
	}
	if n := d.Calls("createProject"); n != 2 {
		t.Errorf("%d createProject calls, want 2", n)
	}
}

func TestPushIntoHarborOneProject(t *testing.T) {
	tb := makeBundle(t, 4<<10)
	reg, d := harborRegistry(t)
	o := opts(reg.Host, nil)
	o.Harbor, o.Mapping = true, push.Mapping{Project: "k-paas"}
	o.Username, o.Password = "admin", "Harbor12345"
	if _, err := push.Push(context.Background(), tb.store, o); err != nil {
		t.Fatal(err)
	}
	if got := d.Created(); !reflect.DeepEqual(got, []string{"k-paas"}) {
		t.Fatalf("created %v", got)
	}
}

func TestHarborErrorsSurface(t *testing.T) {
	tb := makeBundle(t, 1024)
	reg, d := harborRegistry(t)
	d.CreateError = &harbortest.ErrorResponse{Status: http.StatusForbidden,
		ErrorItem: harbor.ErrorItem{Code: "FORBIDDEN", Message: "Only system admin can create project"}}
	o := opts(reg.Host, nil)
	o.Harbor = true
	o.Username, o.Password = "admin", "Harbor12345"
	_, err := push.Push(context.Background(), tb.store, o)
	if err == nil || !strings.Contains(err.Error(), "403 Forbidden: FORBIDDEN: Only system admin can create project") {
		t.Fatalf("err = %v", err)
	}

	o.Password = "wrong"
	_, err = push.Push(context.Background(), tb.store, o)
	if err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("wrong password: err = %v", err)
	}
	if strings.Contains(err.Error(), "wrong") {
		t.Fatalf("the password leaked into the error: %v", err)
	}
}
