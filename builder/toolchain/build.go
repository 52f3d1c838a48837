package toolchain

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"kpaas.dev/appliance/internal/progress"
)

// builder runs recipes and owns the cache folder.
type builder struct {
	opts      *Options
	goVersion string // "go1.26.8", from the go command that builds
	modCache  string
	env       []string // environment of every command
	resolver  *resolver
}

func newBuilder(ctx context.Context, opts *Options) (*builder, error) {
	b := &builder{opts: opts}
	// The scratch modules' go.sum files are the pins: never update them, never
	// switch toolchains behind the cache key's back, ignore go.work files.
	goflags := strings.TrimSpace(os.Getenv("GOFLAGS") + " -mod=readonly")
	b.env = append(os.Environ(), "GOWORK=off", "GOTOOLCHAIN=local", "GOFLAGS="+goflags)
	if opts.Offline {
		b.env = append(b.env, "GOPROXY=off", "npm_config_offline=true")
	}
	out, err := b.output(ctx, opts.SourceDir, opts.Go, "env", "GOVERSION", "GOMODCACHE")
	if err != nil {
		return nil, fmt.Errorf("asking the go command for its version: %w", err)
	}
	lines := strings.Fields(out)
	if len(lines) != 2 {
		return nil, fmt.Errorf("unexpected go env output %q", out)
	}
	b.goVersion, b.modCache = lines[0], lines[1]
	b.resolver = &resolver{b: b, ctx: ctx}
	return b, nil
}

// CommandError is a failed command with its command line and output.
type CommandError struct {
	Dir    string
	Args   []string
	Output string // the last part of stdout+stderr
	Err    error
}

func (e *CommandError) Error() string {
	return fmt.Sprintf("%s (in %s): %v\n%s", strings.Join(e.Args, " "), e.Dir, e.Err, e.Output)
}

func (e *CommandError) Unwrap() error { return e.Err }

func (b *builder) output(ctx context.Context, dir, prog string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Dir, cmd.Env = dir, b.env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", &CommandError{Dir: dir, Args: cmd.Args, Output: tail(stderr.String(), 4000), Err: err}
	}
	return string(out), nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// resolver answers the questions recipes ask about their modules.
type resolver struct {
	b   *builder
	ctx context.Context
}

type downloadInfo struct {
	Dir  string
	Info string
}

func (r *resolver) download(module, path string) (*downloadInfo, error) {
	out, err := r.b.output(r.ctx, filepath.Join(r.b.opts.SourceDir, module), r.b.opts.Go, "mod", "download", "-json", path)
	if err != nil {
		return nil, err
	}
	var d downloadInfo
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		return nil, fmt.Errorf("reading go mod download output for %s: %w", path, err)
	}
	return &d, nil
}

// moduleDir is the extracted source folder of path as module requires it.
func (r *resolver) moduleDir(module, path string) (string, error) {
	d, err := r.download(module, path)
	if err != nil {
		return "", err
	}
	return d.Dir, nil
}

// moduleTime is the publication time of path on the module proxy, RFC 3339.
func (r *resolver) moduleTime(module, path string) (string, error) {
	d, err := r.download(module, path)
	if err != nil {
		return "", err
	}
	data, err := os.ReadFile(d.Info)
	if err != nil {
		return "", err
	}
	var info struct{ Time time.Time }
	if err := json.Unmarshal(data, &info); err != nil {
		return "", fmt.Errorf("reading %s: %w", d.Info, err)
	}
	return info.Time.UTC().Format(time.RFC3339), nil
}

// cacheManifest is written last into a component's cache folder; the folder
// only becomes visible (by rename) once it is complete.
type cacheManifest struct {
	Name     string
	Version  string
	Go       string
	Key      string
	Commands []command
	Files    map[string]fileInfo
	Duration string
}

type fileInfo struct {
	Size   int64
	SHA256 string
}

const manifestName = "toolchain.json"

// key hashes everything that determines a component's outputs.
func (b *builder) key(c *component, cmds []command) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "recipe %s\ngo %s\n", recipeRevision, b.goVersion)
	if c.Revision != "" {
		fmt.Fprintf(h, "revision %s\n", c.Revision)
	}
	if c.Module != "" {
		for _, f := range []string{"go.mod", "go.sum"} {
			data, err := os.ReadFile(filepath.Join(b.opts.SourceDir, c.Module, f))
			if err != nil {
				return "", err
			}
			fmt.Fprintf(h, "%s %d\n", f, len(data))
			h.Write(data)
		}
	}
	for _, in := range c.Inputs {
		if err := hashInput(h, b.opts.SourceDir, in); err != nil {
			return "", fmt.Errorf("input %s of %s: %w", in, c.Name, err)
		}
	}
	for _, cmd := range cmds {
		if cmd.Prog == "gcc" || cmd.Prog == "strip" || cmd.Prog == "localedef" {
			// C compilers, binutils and glibc's locale compiler are inputs too.
			v, err := b.output(b.resolver.ctx, "", cmd.Prog, "--version")
			if err != nil {
				return "", fmt.Errorf("%s is needed for %s: %w", cmd.Prog, c.Name, err)
			}
			fmt.Fprintf(h, "%s version %s\n", cmd.Prog, firstLine(v))
		}
		data, _ := json.Marshal(cmd)
		h.Write(bytes.ReplaceAll(data, []byte(b.modCache), []byte("$GOMODCACHE")))
	}
	return fmt.Sprintf("%s-%s-%s-%s", c.Name, c.Version, b.goVersion, hex.EncodeToString(h.Sum(nil))[:12]), nil
}

// hashInput writes the names, modes and bytes of the file or folder in
// below dir into h, in a fixed order.
func hashInput(h io.Writer, dir, in string) error {
	root := filepath.Join(dir, in)
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.IsDir() {
			fmt.Fprintf(h, "dir %s\n", filepath.ToSlash(rel))
			return nil
		}
		fi, err := hashFile(p)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "file %s %d %s\n", filepath.ToSlash(rel), fi.Size, fi.SHA256)
		return nil
	})
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// entry is c's recipe and its cache folder, keyed by everything that
// determines c's outputs.
func (b *builder) entry(c *component) (cmds []command, key, dir string, err error) {
	cmds, err = c.Recipe(b.resolver)
	if err != nil {
		return nil, "", "", err
	}
	key, err = b.key(c, cmds)
	if err != nil {
		return nil, "", "", err
	}
	return cmds, key, filepath.Join(b.opts.CacheDir, key), nil
}

// completeEntry reports whether a cache folder holds every output its
// manifest lists, at the recorded sizes.
func completeEntry(dir string) bool {
	m, err := readManifest(dir)
	return err == nil && m.complete(dir)
}

// component returns the cache folder of c, building it first unless a
// complete entry already exists. label starts its progress lines
// ("phase kube (1/12)"): one when the compile starts, with the expected
// cold time, then one every Options.Heartbeat while it runs.
func (b *builder) component(ctx context.Context, c *component, label string) (dir string, cached bool, err error) {
	cmds, key, dir, err := b.entry(c)
	if err != nil {
		return "", false, err
	}
	if completeEntry(dir) {
		return dir, true, nil
	}

	if err := os.MkdirAll(b.opts.CacheDir, 0o755); err != nil {
		return "", false, err
	}
	tmp, unlock, err := b.workFolder(key, label)
	if err != nil {
		return "", false, err
	}
	defer unlock()
	defer os.RemoveAll(tmp) // a no-op once renamed
	if completeEntry(dir) { // built by the builder we waited for
		return dir, true, nil
	}

	what := fmt.Sprintf("%s: building %s %s", label, c.Name, c.Version)
	if c.Cold != "" {
		what += fmt.Sprintf(" (cold: %s on 2 cores; cached afterwards)", c.Cold)
	}
	fmt.Fprintln(b.opts.Progress, what)
	// A long compile (Kubernetes: half an hour) is not silent.
	stop := progress.Every(b.opts.Heartbeat, func(elapsed time.Duration) {
		fmt.Fprintf(b.opts.Progress, "%s: still building, %s elapsed\n", label, elapsed.Round(time.Second))
	})
	defer stop()

	start := time.Now()
	for _, cmd := range cmds {
		dir := tmp // commands of module-less components work in the output folder
		if c.Module != "" {
			dir = filepath.Join(b.opts.SourceDir, c.Module)
		}
		if err := b.run(ctx, dir, tmp, cmd); err != nil {
			return "", false, err
		}
	}
	if c.Finish != nil {
		if err := c.Finish(tmp); err != nil {
			return "", false, err
		}
	}
	m := &cacheManifest{Name: c.Name, Version: c.Version, Go: b.goVersion, Key: key, Commands: cmds,
		Files: map[string]fileInfo{}, Duration: roundDuration(time.Since(start)).String()}
	for _, f := range c.Outputs {
		fi, err := hashFile(filepath.Join(tmp, f))
		if err != nil {
			return "", false, fmt.Errorf("output %s: %w", f, err)
		}
		m.Files[f] = fi
	}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return "", false, err
	}
	if err := os.WriteFile(filepath.Join(tmp, manifestName), append(data, '\n'), 0o644); err != nil {
		return "", false, err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", false, err
	}
	os.RemoveAll(dir) // an incomplete entry left by hand
	if err := os.Rename(tmp, dir); err != nil {
		return "", false, err
	}
	return dir, false, nil
}

// workFolder makes the folder an entry is built in: the same path every
// time for the same key, not a random one, because tools may write the
// folder they work in into what they make (with webpack, which builds
// Harbor's portal, an absolute path that reaches a provisional chunk hash
// can change the names its minifier picks: docs/harbor.md). A lock beside
// it keeps two builders of one entry out of each other's way: the second
// waits, then finds the entry built. A folder left by a killed build is
// removed first.
func (b *builder) workFolder(key, label string) (dir string, unlock func(), err error) {
	dir = filepath.Join(b.opts.CacheDir, workPrefix+key)
	lock, err := os.OpenFile(dir+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return "", nil, err
	}
	err = syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		fmt.Fprintf(b.opts.Progress, "%s: waiting for another build of this entry to end (%s)\n", label, lock.Name())
		err = syscall.Flock(int(lock.Fd()), syscall.LOCK_EX)
	}
	if err != nil {
		lock.Close()
		return "", nil, fmt.Errorf("locking %s: %w", lock.Name(), err)
	}
	unlock = func() { lock.Close() } // closing the last descriptor releases the lock
	if err := os.RemoveAll(dir); err != nil {
		unlock()
		return "", nil, err
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		unlock()
		return "", nil, err
	}
	return dir, unlock, nil
}

// workPrefix starts the name of the folder an entry is built in.
const workPrefix = ".build-"

func (b *builder) run(ctx context.Context, moduleDir, out string, c command) error {
	expand := strings.NewReplacer("$OUT", out, "$SRC", b.opts.SourceDir).Replace
	args := make([]string, len(c.Args))
	for i, a := range c.Args {
		args[i] = expand(a)
	}
	env := slices.Clip(b.env)
	for _, e := range c.Env {
		env = append(env, expand(e))
	}
	prog := c.Prog
	if prog == "go" {
		prog = b.opts.Go
	}
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Dir = moduleDir
	cmd.Env = env
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Run(); err != nil {
		io.Copy(b.opts.Log, &buf)
		return &CommandError{Dir: moduleDir, Args: cmd.Args, Output: tail(buf.String(), 4000), Err: err}
	}
	return nil
}

func readManifest(dir string) (*cacheManifest, error) {
	data, err := os.ReadFile(filepath.Join(dir, manifestName))
	if err != nil {
		return nil, err
	}
	var m cacheManifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, err
	}
	return &m, nil
}

// complete checks that every recorded file is present with its size; the
// content is trusted (the folder is private to the cache and was hashed when
// written).
func (m *cacheManifest) complete(dir string) bool {
	for name, fi := range m.Files {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil || st.Size() != fi.Size {
			return false
		}
	}
	return len(m.Files) > 0
}

func hashFile(path string) (fileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return fileInfo{}, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return fileInfo{}, err
	}
	return fileInfo{Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

// linkBin points CACHE/bin/<file> at the current build of every binary, so
// tests and people find them under one stable folder.
func (b *builder) linkBin(comps []*component, dirs map[string]string) error {
	bin := BinDir(b.opts.CacheDir)
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return err
	}
	for _, c := range comps {
		for _, f := range c.Outputs {
			target, err := filepath.Rel(bin, filepath.Join(dirs[c.Name], f))
			if err != nil {
				return err
			}
			if err := relink(filepath.Join(bin, f), target); err != nil {
				return err
			}
		}
	}
	return nil
}

// relink makes link a symlink to target, atomically, unless it already is.
func relink(link, target string) error {
	if cur, err := os.Readlink(link); err == nil && cur == target {
		return nil
	}
	tmp := link + ".tmp"
	os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return err
	}
	return os.Rename(tmp, link)
}
