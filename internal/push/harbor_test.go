package push_test

import (
	"context"
	"net/http"
	"reflect"
	"regexp"
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

// A push as a Harbor user asks for its tokens as a robot account it makes
// for the push's projects (Harbor checks a user's password with 600,000
// PBKDF2 iterations at every token), and removes it at the end.
func TestPushIntoHarborAsRobot(t *testing.T) {
	tb := makeBundle(t, 8<<10)
	reg, d := harborRegistry(t)
	o := opts(reg.Host, nil)
	o.Harbor, o.PublicProjects = true, true
	o.Username, o.Password = "admin", "Harbor12345"
	var out strings.Builder
	o.Progress = &out
	if _, err := push.Push(context.Background(), tb.store, o); err != nil {
		t.Fatal(err)
	}
	if n := d.Calls("CreateRobot"); n != 1 {
		t.Fatalf("%d robot accounts made, want 1\n%s", n, out.String())
	}
	if n := d.TokensFor("admin"); n > 1 {
		t.Errorf("%d tokens asked for as admin, want at most 1 (the credentials check)", n)
	}
	line := regexp.MustCompile(`harbor: pushing as robot account (robot\$` + push.RobotPrefix + `[0-9a-f]{8}) \(pull and push in docker.io, quay.io, registry.k8s.io;`).FindStringSubmatch(out.String())
	if line == nil {
		t.Fatalf("no robot line in the progress:\n%s", out.String())
	}
	if n := d.TokensFor(line[1]); n == 0 {
		t.Errorf("no token asked for as %s", line[1])
	}
	if rs := d.Robots(); len(rs) != 0 || d.Calls("DeleteRobot") != 1 {
		t.Errorf("robot accounts left after the push: %v", rs)
	}
	verifyPulledAuth(t, reg.Host, tb)
}

// A user who may not make robot accounts pushes as itself.
func TestPushIntoHarborWithoutRobot(t *testing.T) {
	tb := makeBundle(t, 4<<10)
	reg, d := harborRegistry(t, "docker.io", "quay.io", "registry.k8s.io")
	d.RobotError = &harbortest.ErrorResponse{Status: http.StatusForbidden,
		ErrorItem: harbor.ErrorItem{Code: "FORBIDDEN", Message: "forbidden"}}
	o := opts(reg.Host, nil)
	o.Harbor = true
	o.Username, o.Password = "admin", "Harbor12345"
	var out strings.Builder
	o.Progress = &out
	if _, err := push.Push(context.Background(), tb.store, o); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "harbor: pushing as admin, without a robot account (harbor: POST /robots: 403 Forbidden: FORBIDDEN: forbidden)") {
		t.Errorf("progress:\n%s", out.String())
	}
	if d.TokensFor("admin") < 2 || d.Calls("DeleteRobot") != 0 {
		t.Errorf("%d tokens as admin, %d robots deleted", d.TokensFor("admin"), d.Calls("DeleteRobot"))
	}
	verifyPulledAuth(t, reg.Host, tb)
}
