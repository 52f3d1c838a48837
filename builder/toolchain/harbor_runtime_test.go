package toolchain

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// TestHarborImagesRun runs Harbor's images as built (the cache's image
// layout) with the built containerd and runc, the way the official chart
// runs them: image entrypoints and users, configuration mounted where the
// chart mounts it, environment as the chart sets it. The database, Redis,
// core, jobservice, registryctl and the registry share one network namespace (their own, not the
// host's), as the chart's Services would connect them:
//
//   - harbor-db initialises a cluster with Harbor's scripts (the registry
//     database included) on a volume and passes its own health check,
//     after a first run killed in the middle of its initialisation;
//   - redis-photon starts with Harbor's redis.conf and answers PING;
//   - harbor-core runs its migrations from /harbor/migrations and reports
//     core, database, Redis, registry, registryctl and jobservice healthy;
//   - the portal stand-in serves its page with the chart's portal nginx.conf;
//     so does Harbor's portal when the cache's layout holds it (built with
//     --harbor-portal): the Angular application, its API description and
//     the Swagger UI page, at the paths the chart's configuration routes.
func TestHarborImagesRun(t *testing.T) {
	cache, bin := builtToolchain(t)
	refs := map[string]string{
		"db":     harborRepo + "harbor-db:" + HarborVersion,
		"redis":  harborRepo + "redis-photon:" + HarborVersion,
		"core":   harborRepo + "harbor-core:" + HarborVersion,
		"reg":    harborRepo + "registry-photon:" + HarborVersion,
		"ctl":    harborRepo + "harbor-registryctl:" + HarborVersion,
		"job":    harborRepo + "harbor-jobservice:" + HarborVersion,
		"portal": HarborPortalStandIn,
	}
	if cachedHasImage(cache, HarborPortalImage) {
		refs["portal-real"] = HarborPortalImage
	} else {
		t.Logf("%s is not in the cache's layout (an optional component: kpaas toolchain build --harbor-portal): only the stand-in runs", HarborPortalImage)
	}

	dir := t.TempDir()
	lay := cachedImagesLayout(t, cache, dir, slices.Collect(maps.Values(refs))...)
	ctr := startContainerdWith(t, bin, lay)

	var started []string
	t.Cleanup(func() {
		for i := len(started) - 1; i >= 0; i-- {
			ctr("task", "kill", "-s", "SIGKILL", started[i])
		}
		time.Sleep(time.Second)
		for _, id := range started {
			ctr("task", "delete", "-f", id)
			ctr("containers", "delete", id)
		}
	})
	// kubelet gives every container an /etc/hosts; so does this test.
	hosts := filepath.Join(dir, "hosts")
	if err := os.WriteFile(hosts, []byte("127.0.0.1 localhost\n::1 localhost ip6-localhost\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(id string, args ...string) {
		t.Helper()
		args = append([]string{"run", "-d", "--mount", "type=bind,src=" + hosts + ",dst=/etc/hosts,options=rbind:ro"}, args...)
		if _, err := ctr(args...); err != nil {
			t.Fatal(err)
		}
		started = append(started, id)
	}
	execN := 0
	exec := func(id string, args ...string) (string, error) {
		execN++
		return ctr(append([]string{"task", "exec", "--exec-id", fmt.Sprintf("x%d", execN), id}, args...)...)
	}
	eventually := func(what string, timeout time.Duration, f func() error) {
		t.Helper()
		waitFor(t, what, timeout, f, func() string { tasks, _ := ctr("task", "ls"); return "tasks:\n" + tasks })
	}
	httpGet := func(id string, port int, path string) (string, error) {
		script := fmt.Sprintf(`exec 3<>/dev/tcp/127.0.0.1/%d && printf 'GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3 && cat <&3`, port, path)
		return exec(id, "bash", "-c", script)
	}
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	mount := func(src, dst string) []string {
		return []string{"--mount", "type=bind,src=" + src + ",dst=" + dst + ",options=rbind:ro"}
	}

	// The database, as the chart's StatefulSet runs it, on a volume. A
	// first run is killed in the middle of its initialisation (as a
	// liveness probe or a power cut would): the next one starts it again.
	pw := randomString(t)
	data := filepath.Join(dir, "db-data")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(data, 999, 999); err != nil {
		t.Fatal(err)
	}
	pg := filepath.Join(data, "pgdata", "pg"+HarborPostgresVersion) // $PGDATA/pg15
	dbArgs := func(id string) []string {
		return []string{"--mount", "type=bind,src=" + data + ",dst=/var/lib/postgresql/data,options=rbind:rw",
			"--env", "POSTGRES_PASSWORD=" + pw, "--env", "PGDATA=/var/lib/postgresql/data/pgdata", refs["db"], id}
	}
	run("db-cut", dbArgs("db-cut")...)
	// initdb writes PG_VERSION among its first files; the whole
	// initialisation takes seconds here, so the test looks often.
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(pg+".init", "PG_VERSION")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			tasks, _ := ctr("task", "ls")
			t.Fatalf("db-cut did not start initialising in $PGDATA/pg%s.init within a minute\n%s", HarborPostgresVersion, tasks)
		}
	}
	ctr("task", "kill", "-s", "SIGKILL", "db-cut")
	eventually("db-cut gone", time.Minute, func() error {
		_, err := ctr("task", "delete", "-f", "db-cut")
		return err
	})
	if _, err := os.Stat(pg); err == nil {
		t.Fatalf("the initialisation was not cut short: make the test kill it earlier")
	}
	run("db", dbArgs("db")...)
	eventually("harbor-db healthy", 3*time.Minute, func() error {
		_, err := exec("db", "/docker-healthcheck.sh")
		return err
	})
	out, err := exec("db", "env", "PGPASSWORD="+pw, "psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "registry", "-tAc", "select count(*) from schema_migrations")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); err != nil || lines[len(lines)-1] != "0" {
		t.Fatalf("the registry database Harbor's initial SQL creates: %v %q", err, out)
	}
	if v, err := os.ReadFile(filepath.Join(pg, "PG_VERSION")); err != nil || strings.TrimSpace(string(v)) != HarborPostgresVersion {
		t.Errorf("the database's PG_VERSION: %q (%v)", v, err)
	}
	if _, err := os.Stat(pg + ".init"); err == nil {
		t.Errorf("the initialisation folder is still there")
	}
	tasks, err := ctr("task", "ls")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^db\s+(\d+)\s+RUNNING`).FindStringSubmatch(tasks)
	if m == nil {
		t.Fatalf("no running db task:\n%s", tasks)
	}
	netns := "network:/proc/" + m[1] + "/ns/net"

	// Redis with Harbor's configuration, in the database's network.
	run("redis", "--with-ns", netns, refs["redis"], "redis")
	eventually("redis answers PING", time.Minute, func() error {
		out, err := exec("redis", "redis-cli", "-h", "127.0.0.1", "ping")
		if err == nil && !strings.Contains(out, "PONG") {
			err = fmt.Errorf("answered %q", out)
		}
		return err
	})

	// The registry with htpasswd auth for core's account (the chart's
	// registry config.yml, trimmed to filesystem storage).
	regConfig := file("registry.yml", `version: 0.1
log: {level: info}
storage:
  filesystem: {rootdirectory: /storage}
  cache: {layerinfo: redis}
  delete: {enabled: true}
redis: {addr: "127.0.0.1:6379", db: 2}
http:
  addr: :5000
  relativeurls: false
  debug: {addr: "localhost:5001"}
auth:
  htpasswd: {realm: harbor-registry-basic-realm, path: /etc/registry/passwd}
validation: {disabled: true}
`)
	regPassword := randomString(t)
	passwd := file("passwd", "harbor_registry_user:"+bcryptHash(t, regPassword)+"\n")
	run("reg", slices.Concat([]string{"--with-ns", netns}, mount(regConfig, "/etc/registry/config.yml"), mount(passwd, "/etc/registry/passwd"), []string{refs["reg"], "reg"})...)

	// Core, with the files and variables the chart gives it.
	appConf := file("app.conf", "appname = Harbor\nrunmode = prod\nenablegzip = true\n\n[prod]\nhttpport = 8080\n")
	key := file("key", randomString(t)[:16])
	pk := file("private_key.pem", rsaPEM(t))
	env := []string{
		"CONFIG_PATH=/etc/core/app.conf",
		"_REDIS_URL_CORE=redis://127.0.0.1:6379/0", "_REDIS_URL_REG=redis://127.0.0.1:6379/2",
		"EXT_ENDPOINT=http://harbor.local", "DATABASE_TYPE=postgresql",
		"POSTGRESQL_HOST=127.0.0.1", "POSTGRESQL_PORT=5432", "POSTGRESQL_USERNAME=postgres",
		"POSTGRESQL_PASSWORD=" + pw, "POSTGRESQL_DATABASE=registry", "POSTGRESQL_SSLMODE=disable",
		"REGISTRY_URL=http://127.0.0.1:5000", "TOKEN_SERVICE_URL=http://127.0.0.1:8080/service/token",
		"CORE_URL=http://127.0.0.1:8080", "CORE_LOCAL_URL=http://127.0.0.1:8080",
		"JOBSERVICE_URL=http://127.0.0.1:8081", "REGISTRY_CONTROLLER_URL=http://127.0.0.1:8082",
		"PORTAL_URL=http://127.0.0.1:8083", "WITH_TRIVY=false", "REGISTRY_STORAGE_PROVIDER_NAME=filesystem",
		"HARBOR_ADMIN_PASSWORD=" + randomString(t), "CORE_SECRET=" + randomString(t), "JOBSERVICE_SECRET=" + randomString(t),
		"REGISTRY_CREDENTIAL_USERNAME=harbor_registry_user", "REGISTRY_CREDENTIAL_PASSWORD=" + regPassword,
		"CSRF_KEY=" + randomString(t)[:32], "PORT=8080",
	}
	args := []string{"--with-ns", netns}
	for _, e := range env {
		args = append(args, "--env", e)
	}
	args = slices.Concat(args, mount(appConf, "/etc/core/app.conf"), mount(key, "/etc/core/key"),
		mount(pk, "/etc/core/private_key.pem"), []string{refs["core"], "core"})
	run("core", args...)
	// registryctl and jobservice, as the chart runs them (jobservice reads
	// its configuration from core when it starts).
	secrets := map[string]string{}
	for _, e := range env {
		if k, v, _ := strings.Cut(e, "="); k == "CORE_SECRET" || k == "JOBSERVICE_SECRET" {
			secrets[k] = v
		}
	}
	ctlConfig := file("registryctl.yml", "protocol: http\nport: 8082\nlog_level: info\nregistry_config: /etc/registry/config.yml\n")
	run("ctl", slices.Concat([]string{"--with-ns", netns, "--env", "CORE_SECRET=" + secrets["CORE_SECRET"], "--env", "JOBSERVICE_SECRET=" + secrets["JOBSERVICE_SECRET"]},
		mount(ctlConfig, "/etc/registryctl/config.yml"), mount(regConfig, "/etc/registry/config.yml"), []string{refs["ctl"], "ctl"})...)
	eventually("harbor-core answers", 3*time.Minute, func() error {
		_, err := httpGet("core", 8080, "/api/v2.0/ping")
		return err
	})
	jobConfig := file("jobservice.yml", `protocol: "http"
port: 8081
worker_pool:
  workers: 2
  backend: "redis"
  redis_pool: {redis_url: "redis://127.0.0.1:6379/1", namespace: "harbor_job_service_namespace", idle_timeout_second: 3600}
job_loggers:
  - {name: "STD_OUTPUT", level: "INFO"}
loggers:
  - {name: "STD_OUTPUT", level: "INFO"}
reaper: {max_update_hours: 24, max_dangling_hours: 168}
`)
	run("job", slices.Concat([]string{"--with-ns", netns,
		"--env", "CORE_SECRET=" + secrets["CORE_SECRET"], "--env", "JOBSERVICE_SECRET=" + secrets["JOBSERVICE_SECRET"],
		"--env", "CORE_URL=http://127.0.0.1:8080", "--env", "REGISTRY_URL=http://127.0.0.1:5000",
		"--env", "REGISTRY_CONTROLLER_URL=http://127.0.0.1:8082", "--env", "REGISTRY_CREDENTIAL_USERNAME=harbor_registry_user",
		"--env", "REGISTRY_CREDENTIAL_PASSWORD=" + regPassword},
		mount(jobConfig, "/etc/jobservice/config.yml"), []string{refs["job"], "job"})...)
	eventually("harbor-core reports every component it was given healthy", 3*time.Minute, func() error {
		out, err := httpGet("core", 8080, "/api/v2.0/health")
		if err != nil {
			return err
		}
		for _, c := range []string{"core", "database", "redis", "registry", "registryctl", "jobservice"} {
			if !regexp.MustCompile(`"name":"` + c + `","status":"healthy"`).MatchString(out) {
				return fmt.Errorf("%s not healthy: %s", c, out)
			}
		}
		return nil
	})

	// The portal stand-in with the chart's portal configuration.
	portalConf := file("portal.conf", `worker_processes auto;
pid /tmp/nginx.pid;
events { worker_connections 1024; }
http {
  client_body_temp_path /tmp/client_body_temp;
  proxy_temp_path /tmp/proxy_temp;
  fastcgi_temp_path /tmp/fastcgi_temp;
  uwsgi_temp_path /tmp/uwsgi_temp;
  scgi_temp_path /tmp/scgi_temp;
  server {
    listen 8080;
    listen [::]:8080;
    server_name localhost;
    root /usr/share/nginx/html;
    index index.html index.htm;
    include /etc/nginx/mime.types;
    location /devcenter-api-2.0 { try_files $uri $uri/ /swagger-ui-index.html; }
    location / { try_files $uri $uri/ /index.html; }
    location = /index.html { add_header Cache-Control "no-store, no-cache, must-revalidate"; }
  }
}
`)
	run("portal", slices.Concat(mount(portalConf, "/etc/nginx/nginx.conf"), []string{refs["portal"], "portal"})...)
	eventually("the portal stand-in serves its page", time.Minute, func() error {
		out, err := httpGet("portal", 8080, "/")
		if err != nil || !strings.Contains(out, "200 OK") || !strings.Contains(out, "Harbor "+HarborVersion) {
			return fmt.Errorf("answered %v %q", err, out)
		}
		return nil
	})
	if refs["portal-real"] == "" {
		return
	}
	run("portal-real", slices.Concat(mount(portalConf, "/etc/nginx/nginx.conf"), []string{refs["portal-real"], "portal-real"})...)
	// The application's page, also for a route of the application (the
	// chart sends unknown paths to index.html), its API description, and
	// the API reference page the chart routes /devcenter-api-2.0 to.
	for path, want := range map[string]string{
		"/":                      "<harbor-app",
		"/harbor/projects":       "<harbor-app",
		"/swagger.json":          `"swagger":"2.0"`,
		"/devcenter-api-2.0":     "swagger-ui",
		"/swagger-ui-index.html": "swagger-ui",
	} {
		eventually("the portal serves "+path, time.Minute, func() error {
			out, err := httpGet("portal-real", 8080, path)
			if err != nil || !strings.Contains(out, "200 OK") || !strings.Contains(out, want) {
				return fmt.Errorf("answered %v %.300q", err, out)
			}
			return nil
		})
	}
}

// cachedHasImage reports whether the cache's images entry holds ref.
func cachedHasImage(cache, ref string) bool {
	images, _ := cachedImages(ImagesDir(cache))
	return slices.ContainsFunc(images, func(i ImageResult) bool { return i.Ref == ref })
}

func bcryptHash(t *testing.T, password string) string {
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

func randomString(t *testing.T) string {
	b := make([]byte, 20)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func rsaPEM(t *testing.T) string {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}))
}

// waitFor polls f every second until it succeeds, or fails t after timeout
// with f's last error and what context says.
func waitFor(t *testing.T, what string, timeout time.Duration, f func() error, context func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v\n%s", what, timeout, err, context())
		}
		time.Sleep(time.Second)
	}
}
