package toolchain

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"kpaas.dev/appliance/internal/testenv"
)

// bareHost has nothing installed.
var bareHost = host{
	lookPath:    func(string) (string, error) { return "", errors.New("not found") },
	stat:        func(string) (fs.FileInfo, error) { return nil, fs.ErrNotExist },
	glob:        func(string) ([]string, error) { return nil, nil },
	nodeVersion: func() string { return "" },
}

// fullHost has everything.
var fullHost = host{
	lookPath:    func(n string) (string, error) { return "/usr/bin/" + n, nil },
	stat:        func(string) (fs.FileInfo, error) { return nil, nil },
	glob:        func(p string) ([]string, error) { return []string{p}, nil },
	nodeVersion: func() string { return "v20.20.2" },
}

// TestPrerequisitesNamePackages: a host that lacks the C tools, libseccomp
// and the apt lists hears of all of them at once, with the Debian packages.
func TestPrerequisitesNamePackages(t *testing.T) {
	err := checkPrerequisites(bareHost, "go1.26.8", false)
	var pe *PrerequisiteError
	if !errors.As(err, &pe) {
		t.Fatalf("err = %v, want a *PrerequisiteError", err)
	}
	want := []string{"apt", "binutils", "dpkg", "gcc", "libc6-dev", "libseccomp-dev", "pkg-config"}
	if !reflect.DeepEqual(pe.Packages, want) {
		t.Errorf("packages %v, want %v", pe.Packages, want)
	}
	for _, s := range []string{"libseccomp.a (for runc (static seccomp)): Debian package libseccomp-dev", "apt-get install apt binutils", "apt-get update", "nothing was built"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error lacks %q:\n%v", s, err)
		}
	}
	if err := checkPrerequisites(fullHost, "go1.26.8", false); err != nil {
		t.Errorf("a full host: %v", err)
	}
	if err := checkPrerequisites(fullHost, "go1.25.3", false); err == nil || !strings.Contains(err.Error(), MinGoVersion) {
		t.Errorf("an old go: err = %v, want the minimum named", err)
	}
}

// TestPortalPrerequisites: the portal's build asks for npm and a new
// enough Node.js, and only when the portal is built.
func TestPortalPrerequisites(t *testing.T) {
	h := fullHost
	h.nodeVersion = func() string { return "v18.19.0" }
	if err := checkPrerequisites(h, "go1.26.8", false); err != nil {
		t.Errorf("no portal, old node: %v", err)
	}
	err := checkPrerequisites(h, "go1.26.8", true)
	if err == nil || !strings.Contains(err.Error(), "Node.js "+MinNodeVersion+" or newer (for Harbor's portal (Angular 21))") {
		t.Errorf("portal, node 18: err = %v, want the minimum named", err)
	}
	var pe *PrerequisiteError
	if err := checkPrerequisites(bareHost, "go1.26.8", true); !errors.As(err, &pe) || !slices.Contains(pe.Packages, "npm") {
		t.Errorf("portal, bare host: %v, want npm among the packages", err)
	}
	for have, want := range map[string]bool{"v20.19.0": true, "v20.20.2": true, "v22.1.0": true, "v20.18.9": false, "v18.19.0": false, "": false, "v20": false, "v24.0.0-nightly": true} {
		if got := nodeAtLeast(have, MinNodeVersion); got != want {
			t.Errorf("nodeAtLeast(%q) = %v, want %v", have, got, want)
		}
	}
}

// TestBuildChecksPrerequisitesFirst: Build refuses a host without the
// prerequisites before it builds or caches anything.
func TestBuildChecksPrerequisitesFirst(t *testing.T) {
	cache := t.TempDir()
	var progress bytes.Buffer
	_, err := build(context.Background(), Options{SourceDir: t.TempDir(), CacheDir: cache, Progress: &progress}, bareHost)
	var pe *PrerequisiteError
	if !errors.As(err, &pe) {
		t.Fatalf("err = %v, want a *PrerequisiteError", err)
	}
	if des, _ := os.ReadDir(cache); len(des) != 0 || progress.Len() != 0 {
		t.Errorf("the cache has %d entries, progress %q; want nothing done", len(des), progress.String())
	}
}

// TestComponentAnnouncesAndHeartbeats: a component that is compiled says
// what it builds and its expected cold time when it starts, then that it
// is still building, with the elapsed time, while it runs; a cached one
// says nothing until it is done.
func TestComponentAnnouncesAndHeartbeats(t *testing.T) {
	var out testenv.LockedBuffer
	opts := &Options{CacheDir: t.TempDir(), Progress: &out, Log: &out, Heartbeat: 20 * time.Millisecond}
	b := &builder{opts: opts, resolver: &resolver{ctx: context.Background()}}
	b.resolver.b = b
	slow := &component{
		Name: "slow", Version: "v1", Cold: "about a minute", Outputs: []string{"x"},
		Recipe: func(*resolver) ([]command, error) {
			return []command{{Prog: "sh", Args: []string{"-c", "sleep 0.2; echo x > $OUT/x"}}}, nil
		},
	}
	dir, cached, err := b.component(context.Background(), slow, "phase slow (1/2)")
	if err != nil || cached {
		t.Fatalf("component: %v (cached %v)", err, cached)
	}
	if _, err := os.Stat(filepath.Join(dir, "x")); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	if !strings.HasPrefix(got, "phase slow (1/2): building slow v1 (cold: about a minute on 2 cores; cached afterwards)\n") {
		t.Errorf("first line of %q, want the announcement", got)
	}
	if n := strings.Count(got, "phase slow (1/2): still building, "); n < 2 || !strings.Contains(got, "s elapsed\n") {
		t.Errorf("%d heartbeat lines in %q, want several with the elapsed time", n, got)
	}
	lines := strings.Count(got, "\n")
	time.Sleep(60 * time.Millisecond)
	if strings.Count(out.String(), "\n") != lines {
		t.Errorf("heartbeat lines after the component finished: %q", out.String())
	}

	var again testenv.LockedBuffer
	opts.Progress = &again
	if _, cached, err := b.component(context.Background(), slow, "phase slow (1/2)"); err != nil || !cached || again.String() != "" {
		t.Errorf("cached component: cached %v, %v, progress %q; want it silent", cached, err, again.String())
	}
}

// TestComponentBuildsInOneFolder: a component builds in the same folder
// every time (tools such as webpack write it into what they make), a
// folder left by a killed build does not leak into the next, and of two
// builders of one entry at once only one runs the recipe; the other waits
// and takes the entry.
func TestComponentBuildsInOneFolder(t *testing.T) {
	cache := t.TempDir()
	runs := filepath.Join(t.TempDir(), "runs")
	var out testenv.LockedBuffer
	opts := &Options{CacheDir: cache, Progress: &out, Log: io.Discard, Heartbeat: time.Hour}
	b := &builder{opts: opts, resolver: &resolver{ctx: context.Background()}}
	b.resolver.b = b
	c := &component{
		Name: "where", Version: "v1", Outputs: []string{"where"},
		Recipe: func(*resolver) ([]command, error) {
			return []command{{Prog: "sh", Args: []string{"-c",
				"echo run >> " + runs + "; sleep 0.3; pwd > $OUT/where; ls -A >> $OUT/where"}}}, nil
		},
	}
	read := func(dir string) string {
		t.Helper()
		data, err := os.ReadFile(filepath.Join(dir, "where"))
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}

	dir, _, err := b.component(context.Background(), c, "where")
	if err != nil {
		t.Fatal(err)
	}
	first := read(dir)
	work := filepath.Join(cache, workPrefix+filepath.Base(dir))
	if want := work + "\nwhere\n"; first != want { // pwd, then what the folder held
		t.Errorf("the recipe ran in and saw %q, want %q", first, want)
	}
	if _, err := os.Stat(work); !os.IsNotExist(err) {
		t.Errorf("the work folder is still there after the build: %v", err)
	}

	// A build killed halfway left its folder; the entry is gone.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(work, "half-done"), 0o755); err != nil {
		t.Fatal(err)
	}
	if dir2, cached, err := b.component(context.Background(), c, "where"); err != nil || cached || dir2 != dir {
		t.Fatalf("rebuild: %s, cached %v, %v", dir2, cached, err)
	}
	if again := read(dir); again != first {
		t.Errorf("second build saw %q, first %q", again, first)
	}

	// Two builders at once, while another process holds the entry's lock
	// (taken here the way a builder takes it): both wait and say so; once
	// it is released, one builds and the other takes its entry.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(runs); err != nil {
		t.Fatal(err)
	}
	other, err := os.OpenFile(work+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(other.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	type result struct {
		dir    string
		cached bool
		err    error
	}
	results := make(chan result, 2)
	for range 2 {
		go func() {
			d, cached, err := b.component(context.Background(), c, "where")
			results <- result{d, cached, err}
		}()
	}
	waiting := "where: waiting for another build of this entry to end (" + work + ".lock)\n"
	for deadline := time.Now().Add(10 * time.Second); strings.Count(out.String(), waiting) < 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("progress %q: want both builders to say they wait", out.String())
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "where")); !os.IsNotExist(err) {
		t.Fatalf("built while the lock was held: %v", err)
	}
	other.Close()
	var built, cached int
	for range 2 {
		r := <-results
		if r.err != nil || r.dir != dir {
			t.Fatalf("concurrent build: %s, %v", r.dir, r.err)
		}
		if r.cached {
			cached++
		} else {
			built++
		}
	}
	if data, _ := os.ReadFile(runs); built != 1 || cached != 1 || string(data) != "run\n" {
		t.Errorf("built %d, cached %d, recipe runs %q; want one build, one wait", built, cached, data)
	}
	if _, err := os.Stat(work); !os.IsNotExist(err) {
		t.Errorf("the work folder is still there after the wait: %v", err)
	}
	if read(dir) != first {
		t.Errorf("concurrent build saw %q", read(dir))
	}
}

// Apt may keep its lists compressed (Acquire::GzipIndexes, as container
// images often configure it): such lists count.
func TestCompressedAptListsCount(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages.lz4"), []byte("x"), 0o644)
	h := fullHost
	h.glob = func(p string) ([]string, error) {
		return filepath.Glob(filepath.Join(dir, filepath.Base(p)))
	}
	if err := checkPrerequisites(h, "go1.26.8", false); err != nil {
		t.Errorf("compressed lists refused: %v", err)
	}
}
