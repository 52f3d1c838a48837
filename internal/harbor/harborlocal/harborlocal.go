// Package harborlocal runs a REAL Harbor for tests: harbor-core, the
// registry (Harbor's distribution fork), harbor-registryctl and
// harbor-jobservice as `kpaas toolchain build` compiled them from Harbor's
// sources, on free 127.0.0.1 ports, with Debian's PostgreSQL and Redis as
// its database and cache (as the official chart's external database and
// Redis options would have it).
//
// Binaries are looked up like internal/kubetest's: $KPAAS_TOOLCHAIN_DIR,
// else the bin/ folder of the toolchain cache. PostgreSQL's server comes
// from /usr/lib/postgresql/<version>/bin (package postgresql-15) and Redis
// from redis-server (package redis-server). When something is missing the
// test is skipped with what to install; in CI it fails (internal/testenv).
//
// Every Start makes a fresh Harbor with a random admin password (about
// 10–20 s: the database is created and core runs Harbor's migrations).
// Cleanup stops the processes in reverse order (SIGTERM, then SIGKILL after
// 10 s) and removes the folder; HARBORLOCAL_KEEP=1 keeps it when the test
// failed. Processes also die with the test binary (Pdeathsig).
package harborlocal

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"kpaas.dev/appliance/internal/testenv"
)

// Names of the toolchain outputs this package runs (builder/toolchain's
// Harbor components).
const (
	coreBin        = "harbor_core"
	jobserviceBin  = "harbor_jobservice"
	registryctlBin = "harbor_registryctl"
	registryBin    = "harbor-registry"
	supportTar     = "harbor-support.tar"
)

// registryUser is the account core uses towards the registry (htpasswd),
// named as in Harbor's own configuration.
const registryUser = "harbor_registry_user"

// Harbor is a running Harbor.
type Harbor struct {
	// URL is core's address, http://127.0.0.1:<port>: the REST API below
	// /api/v2.0, the token service and the registry API below /v2/.
	URL string
	// Host is URL's host:port, the registry host to push to.
	Host string
	// Admin and Password are the system administrator's credentials.
	Admin, Password string
	// Dir holds the configuration, the data and the processes' logs.
	Dir string
	// RegistryDir is the registry's storage root.
	RegistryDir string

	procs testenv.Procs
}

// BinDir is where Start looks for Harbor's binaries.
func BinDir() string { return testenv.ToolchainBin() }

// Start starts PostgreSQL, Redis, the registry, registryctl, core and
// jobservice, waits until Harbor's health API reports core, database,
// Redis, registry, registryctl and jobservice healthy, and returns it.
func Start(t testing.TB) *Harbor {
	t.Helper()
	if missing := Missing(); missing != "" {
		testenv.SkipOrFail(t, "harborlocal: "+missing)
	}
	h, err := launch()
	if h != nil {
		t.Cleanup(func() {
			h.stop()
			if t.Failed() {
				h.dumpLogs(t.Logf)
				if os.Getenv("HARBORLOCAL_KEEP") != "" {
					t.Logf("harborlocal: kept %s", h.Dir)
					return
				}
			}
			os.RemoveAll(h.Dir)
		})
	}
	if err != nil {
		t.Fatalf("harborlocal: %v", err)
	}
	return h
}

// Missing says what Start or Launch lacks on this machine (binaries,
// PostgreSQL, Redis), or "" when nothing is missing.
func Missing() string {
	bin := BinDir()
	var missing []string
	for _, b := range []string{coreBin, jobserviceBin, registryctlBin, registryBin, supportTar} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		return fmt.Sprintf("%s not in %s: build the toolchain first (`make toolchain`) or set KPAAS_TOOLCHAIN_DIR", strings.Join(missing, ", "), bin)
	}
	if postgresBinDir() == "" {
		return "no PostgreSQL server in /usr/lib/postgresql/*/bin: apt-get install postgresql-15 (or hack/install-deps.sh)"
	}
	for _, tool := range []string{"redis-server", "tar"} {
		if _, err := exec.LookPath(tool); err != nil {
			return tool + " is not installed (hack/install-deps.sh installs it)"
		}
	}
	return ""
}

// Launch starts a Harbor as Start does, outside a test (benchmarks): the
// caller stops it with Close. On an error, what was started is stopped.
func Launch() (*Harbor, error) {
	if missing := Missing(); missing != "" {
		return nil, errors.New(missing)
	}
	h, err := launch()
	if err != nil {
		if h != nil {
			h.dumpLogs(func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) })
			h.Close()
		}
		return nil, err
	}
	return h, nil
}

// Close stops every process and removes the folder.
func (h *Harbor) Close() {
	h.stop()
	os.RemoveAll(h.Dir)
}

func launch() (*Harbor, error) {
	redis, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "harborlocal-")
	if err != nil {
		return nil, err
	}
	h := &Harbor{Dir: dir, Admin: "admin", Password: randomHex(12) + "Aa1", procs: testenv.Procs{Dir: dir}}
	return h, h.start(BinDir(), postgresBinDir(), redis)
}

// postgresBinDir is the newest /usr/lib/postgresql/<version>/bin with a
// server in it.
func postgresBinDir() string {
	m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	if len(m) == 0 {
		return ""
	}
	slices.SortFunc(m, func(a, b string) int {
		va, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(a))))
		vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(b))))
		return va - vb
	})
	return filepath.Dir(m[len(m)-1])
}

func (h *Harbor) start(bin, pgBin, redis string) error {
	ports, err := testenv.FreePorts(6)
	if err != nil {
		return err
	}
	pgPort, redisPort, regPort, ctlPort, corePort, jobPort := ports[0], ports[1], ports[2], ports[3], ports[4], ports[5]
	h.URL = fmt.Sprintf("http://127.0.0.1:%d", corePort)
	h.Host = fmt.Sprintf("127.0.0.1:%d", corePort)

	// Harbor's support files (migrations, views) unpacked once per Harbor.
	support := filepath.Join(h.Dir, "support")
	if err := os.MkdirAll(support, 0o755); err != nil {
		return err
	}
	if out, err := exec.Command("tar", "-xf", filepath.Join(bin, supportTar), "-C", support).CombinedOutput(); err != nil {
		return fmt.Errorf("unpacking %s: %v: %s", supportTar, err, out)
	}

	dbPassword := randomHex(16)
	if err := h.startPostgres(pgBin, pgPort, dbPassword, filepath.Join(support, "make/photon/db/initial-registry.sql")); err != nil {
		return err
	}
	if err := h.spawn("redis", redis, nil, "", "--bind", "127.0.0.1", "--port", strconv.Itoa(redisPort),
		"--save", "", "--appendonly", "no", "--dir", h.Dir); err != nil {
		return err
	}
	if err := waitTCP(fmt.Sprintf("127.0.0.1:%d", redisPort), 30*time.Second); err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	redisURL := func(db int) string { return fmt.Sprintf("redis://127.0.0.1:%d/%d", redisPort, db) }

	// The registry: htpasswd auth for core's account, storage on disk.
	regPassword := randomHex(16)
	hash, err := bcrypt.GenerateFromPassword([]byte(regPassword), bcrypt.DefaultCost)
	if err != nil {
		return err
	}
	h.RegistryDir = filepath.Join(h.Dir, "registry-data")
	files := map[string]string{
		"registry/passwd":     registryUser + ":" + string(hash) + "\n",
		"registry/config.yml": fmt.Sprintf(registryConfig, h.RegistryDir, redisPort, regPort, filepath.Join(h.Dir, "registry/passwd")),
		"registryctl/config.yml": fmt.Sprintf("protocol: http\nport: %d\nlog_level: info\nregistry_config: %s\n",
			ctlPort, filepath.Join(h.Dir, "registry/config.yml")),
		"jobservice/config.yml": fmt.Sprintf(jobserviceConfig, jobPort, redisURL(2)),
		"core/app.conf":         fmt.Sprintf("appname = Harbor\nrunmode = prod\nenablegzip = true\n\n[prod]\nhttpaddr = 127.0.0.1\nhttpport = %d\n", corePort),
		"core/key":              randomHex(8), // 16 characters: Harbor's AES key for stored secrets
		"core/private_key.pem":  string(rsaKeyPEM()),
	}
	for name, content := range files {
		p := filepath.Join(h.Dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			return err
		}
	}

	coreSecret, jobSecret := randomHex(16), randomHex(16)
	regURL := fmt.Sprintf("http://127.0.0.1:%d", regPort)
	ctlURL := fmt.Sprintf("http://127.0.0.1:%d", ctlPort)
	jobURL := fmt.Sprintf("http://127.0.0.1:%d", jobPort)
	if err := h.spawn("registry", filepath.Join(bin, registryBin), nil, "", "serve", filepath.Join(h.Dir, "registry/config.yml")); err != nil {
		return err
	}
	if err := h.spawn("registryctl", filepath.Join(bin, registryctlBin), []string{
		"CORE_SECRET=" + coreSecret, "JOBSERVICE_SECRET=" + jobSecret,
	}, "", "-c", filepath.Join(h.Dir, "registryctl/config.yml")); err != nil {
		return err
	}
	coreEnv := []string{
		"CONFIG_PATH=" + filepath.Join(h.Dir, "core/app.conf"),
		"KEY_PATH=" + filepath.Join(h.Dir, "core/key"),
		"TOKEN_PRIVATE_KEY_PATH=" + filepath.Join(h.Dir, "core/private_key.pem"),
		"POSTGRES_MIGRATION_SCRIPTS_PATH=" + filepath.Join(support, "make/migrations/postgresql") + "/",
		"_REDIS_URL_CORE=" + redisURL(0), "_REDIS_URL_REG=" + redisURL(1),
		"LOG_LEVEL=info",
		"EXT_ENDPOINT=" + h.URL,
		"DATABASE_TYPE=postgresql",
		"POSTGRESQL_HOST=127.0.0.1", "POSTGRESQL_PORT=" + strconv.Itoa(pgPort),
		"POSTGRESQL_USERNAME=postgres", "POSTGRESQL_PASSWORD=" + dbPassword,
		"POSTGRESQL_DATABASE=registry", "POSTGRESQL_SSLMODE=disable",
		"POSTGRESQL_MAX_IDLE_CONNS=10", "POSTGRESQL_MAX_OPEN_CONNS=100",
		"REGISTRY_URL=" + regURL,
		"PORTAL_URL=http://127.0.0.1:1", // no portal is run
		"TOKEN_SERVICE_URL=" + h.URL + "/service/token",
		"HARBOR_ADMIN_PASSWORD=" + h.Password,
		"MAX_JOB_WORKERS=4",
		"CORE_SECRET=" + coreSecret, "JOBSERVICE_SECRET=" + jobSecret,
		"WITH_TRIVY=false",
		"CORE_URL=" + h.URL, "CORE_LOCAL_URL=" + h.URL,
		"JOBSERVICE_URL=" + jobURL,
		"REGISTRY_STORAGE_PROVIDER_NAME=filesystem",
		"READ_ONLY=false",
		"REGISTRY_CONTROLLER_URL=" + ctlURL,
		"REGISTRY_CREDENTIAL_USERNAME=" + registryUser, "REGISTRY_CREDENTIAL_PASSWORD=" + regPassword,
		"CSRF_KEY=" + randomHex(16),
		"ROBOT_SCANNER_NAME_PREFIX=" + randomHex(4),
		"PERMITTED_REGISTRY_TYPES_FOR_PROXY_CACHE=docker-hub,harbor,docker-registry",
		"PORT=" + strconv.Itoa(corePort),
	}
	// core finds its views below its working folder.
	if err := h.spawn("core", filepath.Join(bin, coreBin), coreEnv, filepath.Join(support, "src/core")); err != nil {
		return err
	}
	// jobservice reads its configuration from core once at start (and
	// exits when it cannot: in Kubernetes it would be restarted).
	if err := h.waitPing(2 * time.Minute); err != nil {
		return err
	}
	if err := h.spawn("jobservice", filepath.Join(bin, jobserviceBin), []string{
		"CORE_SECRET=" + coreSecret, "JOBSERVICE_SECRET=" + jobSecret,
		"CORE_URL=" + h.URL, "REGISTRY_URL=" + regURL, "REGISTRY_CONTROLLER_URL=" + ctlURL,
		"LOG_LEVEL=info",
	}, filepath.Join(h.Dir, "jobservice"), "-c", filepath.Join(h.Dir, "jobservice/config.yml")); err != nil {
		return err
	}
	return h.waitHealthy(3 * time.Minute)
}

const registryConfig = `version: 0.1
log:
  level: info
  fields:
    service: registry
storage:
  cache:
    layerinfo: redis
  filesystem:
    rootdirectory: %[1]s
  maintenance:
    uploadpurging:
      enabled: false
  delete:
    enabled: true
redis:
  addr: 127.0.0.1:%[2]d
  readtimeout: 10s
  writetimeout: 10s
  dialtimeout: 10s
  db: 1
  pool:
    maxidle: 100
    maxactive: 500
    idletimeout: 60s
http:
  addr: 127.0.0.1:%[3]d
  secret: placeholder
  debug:
    addr: localhost:0
    prometheus:
      enabled: false
  relativeurls: false
auth:
  htpasswd:
    realm: harbor-registry-basic-realm
    path: %[4]s
validation:
  disabled: true
compatibility:
  schema1:
    enabled: true
`

const jobserviceConfig = `protocol: "http"
port: %d
worker_pool:
  workers: 4
  backend: "redis"
  redis_pool:
    redis_url: %s
    namespace: "harbor_job_service_namespace"
    idle_timeout_second: 3600
job_loggers:
  - name: "STD_OUTPUT"
    level: "INFO"
loggers:
  - name: "STD_OUTPUT"
    level: "INFO"
reaper:
  max_update_hours: 24
  max_dangling_hours: 168
`

// startPostgres creates a cluster with password authentication on TCP,
// starts it on 127.0.0.1:port and runs Harbor's initial SQL (the registry
// database). As root, the server runs as the postgres user (PostgreSQL
// refuses root).
func (h *Harbor) startPostgres(pgBin string, port int, password, initSQL string) error {
	var cred *syscall.Credential
	if os.Getuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return fmt.Errorf("PostgreSQL cannot run as root and there is no postgres user (install postgresql-15): %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	pg := filepath.Join(h.Dir, "postgres")
	if err := os.MkdirAll(pg, 0o700); err != nil {
		return err
	}
	pwfile := filepath.Join(pg, "pwfile")
	if err := os.WriteFile(pwfile, []byte(password+"\n"), 0o600); err != nil {
		return err
	}
	if cred != nil {
		// the folder above must be traversable by the postgres user
		if err := os.Chmod(h.Dir, 0o711); err != nil {
			return err
		}
		for _, p := range []string{pg, pwfile} {
			if err := os.Chown(p, int(cred.Uid), int(cred.Gid)); err != nil {
				return err
			}
		}
	}
	data := filepath.Join(pg, "data")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	initdb := exec.CommandContext(ctx, filepath.Join(pgBin, "initdb"), "-D", data, "-U", "postgres",
		"--pwfile", pwfile, "--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=UTF8", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	initdb.Dir = pg
	if out, err := initdb.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb: %v\n%s", err, out)
	}
	if err := h.spawnAs("postgres", filepath.Join(pgBin, "postgres"), nil, pg, cred,
		"-D", data, "-p", strconv.Itoa(port), "-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories="+pg, "-c", "fsync=off", "-c", "max_connections=200"); err != nil {
		return err
	}
	if err := waitTCP(fmt.Sprintf("127.0.0.1:%d", port), time.Minute); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	var last error
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		psql := exec.CommandContext(ctx, filepath.Join(pgBin, "psql"), "-h", pg, "-p", strconv.Itoa(port), "-U", "postgres",
			"-v", "ON_ERROR_STOP=1", "-q", "-f", initSQL)
		psql.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		psql.Dir = pg
		out, err := psql.CombinedOutput()
		if err == nil {
			return nil
		}
		last = fmt.Errorf("psql -f %s: %v\n%s", filepath.Base(initSQL), err, out)
		if !bytes.Contains(out, []byte("starting up")) {
			break
		}
	}
	return last
}

// waitHealthy polls /api/v2.0/health until every component but the portal
// (not run here) and the scanner (not configured) is healthy.
func (h *Harbor) waitHealthy(timeout time.Duration) error {
	var last string
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if p := h.procs.Exited(); p != nil {
			return fmt.Errorf("%s exited: %v (log: %s)", p.Name, p.Err(), p.Tail(2000))
		}
		st, err := h.health()
		if err == nil {
			var bad []string
			for name, status := range st {
				if status != "healthy" && name != "portal" && name != "trivy" {
					bad = append(bad, name+"="+status)
				}
			}
			if len(bad) == 0 && len(st) > 0 {
				return nil
			}
			slices.Sort(bad)
			last = strings.Join(bad, ", ")
		} else {
			last = err.Error()
		}
		time.Sleep(500 * time.Millisecond)
	}
	return fmt.Errorf("not healthy after %s: %s", timeout, last)
}

// waitPing waits until core answers /api/v2.0/ping.
func (h *Harbor) waitPing(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if p := h.procs.Exited(); p != nil {
			return fmt.Errorf("%s exited: %v (log: %s)", p.Name, p.Err(), p.Tail(2000))
		}
		resp, err := http.Get(h.URL + "/api/v2.0/ping")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = errors.New(resp.Status)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("core did not answer /api/v2.0/ping within %s: %w", timeout, err)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// Health is Harbor's /api/v2.0/health answer: component name → status.
func (h *Harbor) Health() (map[string]string, error) { return h.health() }

func (h *Harbor) health() (map[string]string, error) {
	resp, err := http.Get(h.URL + "/api/v2.0/health")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body struct {
		Status     string `json:"status"`
		Components []struct {
			Name   string `json:"name"`
			Status string `json:"status"`
		} `json:"components"`
	}
	if err := decodeJSON(resp, &body); err != nil {
		return nil, err
	}
	st := map[string]string{}
	for _, c := range body.Components {
		st[c.Name] = c.Status
	}
	return st, nil
}

// Logs returns the log of one process (core, registry, registryctl,
// jobservice, postgres, redis).
func (h *Harbor) Logs(name string) string {
	data, _ := os.ReadFile(filepath.Join(h.Dir, name+".log"))
	return string(data)
}

func (h *Harbor) spawn(name, prog string, env []string, dir string, args ...string) error {
	return h.spawnAs(name, prog, env, dir, nil, args...)
}

func (h *Harbor) spawnAs(name, prog string, env []string, dir string, cred *syscall.Credential, args ...string) error {
	cmd := exec.Command(prog, args...)
	cmd.Dir = dir
	cmd.Env = append(minimalEnv(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	return h.procs.Start(name, cmd)
}

// minimalEnv is what the processes inherit: no proxies, no Harbor
// settings of the caller's environment.
func minimalEnv() []string {
	return []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.TempDir(), "TZ=UTC"}
}

// Stop stops one process (core, registry, …), as an outage would.
func (h *Harbor) Stop(name string) { h.procs.Stop(name) }

func (h *Harbor) stop() { h.procs.StopAll() }

func (h *Harbor) dumpLogs(logf func(format string, args ...any)) {
	for _, p := range h.procs.List() {
		logf("harborlocal: --- %s log (last 3000 bytes) ---\n%s", p.Name, p.Tail(3000))
	}
}

func waitTCP(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not listening after %s: %w", addr, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// rsaKeyPEM is the token service's signing key (PKCS#1, as Harbor's
// prepare step writes it).
func rsaKeyPEM() []byte {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
}

func decodeJSON(resp *http.Response, v any) error {
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(data))
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%s: %w", resp.Request.URL.Path, err)
	}
	return nil
}
