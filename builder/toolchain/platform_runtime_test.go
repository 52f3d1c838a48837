package toolchain

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestPlatformImagesRun runs the demo platform's images as built, with the
// built containerd and runc, the way the demo's manifests and chart run
// them:
//
//   - local-path-provisioner reports its version;
//   - busybox runs the provisioner's setup and teardown scripts (as the
//     helper pods do) on a host folder;
//   - MariaDB refuses to initialise without a root password, initialises
//     a data folder (database, user, root over TCP), and on a second start
//     over the same folder keeps its data without initialising again.
func TestPlatformImagesRun(t *testing.T) {
	cache, bin := builtToolchain(t)
	var (
		lpp     = "docker.io/rancher/local-path-provisioner:" + LocalPathProvisionerVersion
		busybox = "docker.io/library/busybox:" + BusyboxVersion
		mariadb = "docker.io/kpaas/mariadb:" + MariaDBVersion
	)
	dir := t.TempDir()
	ctr := startContainerdWith(t, bin, cachedImagesLayout(t, cache, dir, lpp, busybox, mariadb))
	var started []string
	t.Cleanup(func() {
		for _, id := range started {
			ctr("task", "kill", "-s", "SIGKILL", id)
		}
		time.Sleep(time.Second)
		for _, id := range started {
			ctr("task", "delete", "-f", id)
			ctr("containers", "delete", id)
		}
	})

	if out, err := ctr("run", "--rm", lpp, "lpp", "local-path-provisioner", "--version"); err != nil || !strings.Contains(out, LocalPathProvisionerVersion) {
		t.Errorf("local-path-provisioner --version: %v\n%s", err, out)
	}

	// The helper pod's scripts (the demo's local-path-config), with the
	// volume's folder below a host folder mounted as the pod mounts it.
	vols := filepath.Join(dir, "volumes")
	if err := os.Mkdir(vols, 0o755); err != nil {
		t.Fatal(err)
	}
	mountVols := []string{"--mount", "type=bind,src=" + vols + ",dst=/opt/local-path-provisioner,options=rbind:rw"}
	vol := "/opt/local-path-provisioner/pvc-1_demo_data"
	setup := `set -eu; mkdir -m 0777 -p "$VOL_DIR"`
	teardown := `set -eu; rm -rf "$VOL_DIR"`
	for i, step := range []struct {
		script string
		exists bool
	}{{setup, true}, {teardown, false}} {
		args := append([]string{"run", "--rm", "--env", "VOL_DIR=" + vol}, mountVols...)
		args = append(args, busybox, fmt.Sprintf("helper%d", i), "/bin/sh", "-c", step.script)
		if out, err := ctr(args...); err != nil {
			t.Fatalf("busybox helper %q: %v\n%s", step.script, err, out)
		}
		fi, err := os.Stat(filepath.Join(vols, filepath.Base(vol)))
		if step.exists && (err != nil || fi.Mode().Perm() != 0o777) {
			t.Errorf("after setup the volume folder should exist with mode 0777: %v %v", fi, err)
		}
		if !step.exists && !os.IsNotExist(err) {
			t.Errorf("after teardown the volume folder should be gone: %v", err)
		}
	}

	// MariaDB over a host folder owned by its user, as a PersistentVolume.
	data := filepath.Join(dir, "mysql")
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(data, mariadbUID, mariadbUID); err != nil {
		t.Fatal(err)
	}
	mountData := []string{"--mount", "type=bind,src=" + data + ",dst=/var/lib/mysql,options=rbind:rw"}

	// Through a shell: ctr may drop the output of a task that exits at once.
	out, err := ctr(append(append([]string{"run", "--rm"}, mountData...), mariadb, "db0",
		"/bin/sh", "-c", "/usr/local/bin/docker-entrypoint.sh mariadbd 2>&1")...)
	if err == nil || !strings.Contains(out, "MARIADB_ROOT_PASSWORD is not set") {
		t.Errorf("MariaDB without a root password should refuse to initialise: %v\n%s", err, out)
	}
	if entries, _ := os.ReadDir(data); len(entries) != 0 {
		t.Errorf("the refused start left files in the data folder: %v", entries)
	}

	root, user := randomString(t)+`'\`, randomString(t)
	start := func(id string, env ...string) {
		t.Helper()
		args := []string{"run", "-d", "--log-uri", "file://" + filepath.Join(dir, id+".log")}
		for _, e := range env {
			args = append(args, "--env", e)
		}
		args = append(append(args, mountData...), mariadb, id)
		if out, err := ctr(args...); err != nil {
			t.Fatalf("starting MariaDB: %v\n%s", err, out)
		}
		started = append(started, id)
	}
	execN := 0
	sql := func(id, who, password, query string) (string, error) {
		execN++
		out, err := ctr("task", "exec", "--exec-id", fmt.Sprintf("q%d", execN), id,
			"mariadb", "--protocol=tcp", "-h", "127.0.0.1", "-u", who, "-p"+password, "-N", "-B", "-e", query)
		return lastLines(out, 1), err // after ctr's own warnings
	}
	eventually := func(what string, f func() error) {
		t.Helper()
		waitFor(t, what, 3*time.Minute, f, func() string {
			var b strings.Builder
			logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
			for _, l := range logs {
				data, _ := os.ReadFile(l)
				fmt.Fprintf(&b, "%s:\n%s\n", filepath.Base(l), lastLines(string(data), 30))
			}
			return b.String()
		})
	}
	start("db1", "MARIADB_ROOT_PASSWORD="+root, "MARIADB_DATABASE=demo", "MARIADB_USER=app", "MARIADB_PASSWORD="+user)
	eventually("the app user writes into its database over TCP", func() error {
		_, err := sql("db1", "app", user, "CREATE TABLE demo.t (x INT); INSERT INTO demo.t VALUES (42)")
		return err
	})
	// mariadb.sys owns the mysql.user view and cannot log in.
	if out, err := sql("db1", "root", root, `SELECT IFNULL(GROUP_CONCAT(CONCAT(User, '@', Host)), 'none') FROM mysql.global_priv WHERE User<>'mariadb.sys' AND IFNULL(JSON_VALUE(Priv, '$.authentication_string'), '')=''`); err != nil || out != "none" {
		t.Errorf("accounts without a password: %v %q", err, out)
	}
	if out, err := sql("db1", "root", "wrong", "SELECT 1"); err == nil || !strings.Contains(out, "Access denied") {
		t.Errorf("root with a wrong password: %v %q", err, out)
	}
	ctr("task", "kill", "-s", "SIGTERM", "db1")
	eventually("MariaDB stops on SIGTERM", func() error {
		tasks, _ := ctr("task", "ls")
		if regexp.MustCompile(`(?m)^db1\s+\d+\s+RUNNING`).MatchString(tasks) {
			return fmt.Errorf("still running:\n%s", tasks)
		}
		return nil
	})

	// The same folder again, with no settings at all: the data stays.
	start("db2")
	eventually("the data survives a restart", func() error {
		out, err := sql("db2", "app", user, "SELECT x FROM demo.t")
		if err == nil && strings.TrimSpace(out) != "42" {
			err = fmt.Errorf("read %q", out)
		}
		return err
	})
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
