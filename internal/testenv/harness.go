package testenv

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Procs is the group of long-running processes a test harness starts
// (kubetest's etcd and API server, harborlocal's Harbor): each one logs to
// DIR/NAME.log, dies with the test binary (Pdeathsig), and is stopped
// with SIGTERM, then SIGKILL after 10 s.
type Procs struct {
	// Dir holds the logs.
	Dir  string
	list []*Proc
}

// Proc is one process of a group.
type Proc struct {
	Name string
	// Log is the path of its combined stdout and stderr.
	Log  string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Start starts cmd as name, its output going to Dir/name.log.
func (g *Procs) Start(name string, cmd *exec.Cmd) error {
	logPath := filepath.Join(g.Dir, name+".log")
	log, err := os.Create(logPath)
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = log, log
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := cmd.Start(); err != nil {
		log.Close()
		return fmt.Errorf("starting %s: %w", name, err)
	}
	p := &Proc{Name: name, Log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		log.Close()
		close(p.done)
	}()
	g.list = append(g.list, p)
	return nil
}

// List is the group's processes in start order.
func (g *Procs) List() []*Proc { return g.list }

// Exited is the first process of the group that has exited, or nil.
func (g *Procs) Exited() *Proc {
	for _, p := range g.list {
		select {
		case <-p.done:
			return p
		default:
		}
	}
	return nil
}

// Stop stops the processes called name.
func (g *Procs) Stop(name string) {
	for _, p := range g.list {
		if p.Name == name {
			p.stop()
		}
	}
}

// StopAll stops every process, the last started first.
func (g *Procs) StopAll() {
	for i := len(g.list) - 1; i >= 0; i-- {
		g.list[i].stop()
	}
}

// Err is how the process ended (nil while it runs or after a clean exit).
func (p *Proc) Err() error {
	select {
	case <-p.done:
		return p.err
	default:
		return nil
	}
}

// Tail is the last n bytes of the process's log.
func (p *Proc) Tail(n int) string {
	data, _ := os.ReadFile(p.Log)
	if len(data) > n {
		data = data[len(data)-n:]
	}
	return string(data)
}

func (p *Proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// ToolchainBin is the folder of the binaries `kpaas toolchain build`
// made, where the harnesses of real components look: $KPAAS_TOOLCHAIN_DIR,
// else the bin/ folder of the toolchain cache ($KPAAS_CACHE/toolchain/bin
// or <user cache dir>/kpaas/toolchain/bin).
func ToolchainBin() string {
	if d := os.Getenv("KPAAS_TOOLCHAIN_DIR"); d != "" {
		return d
	}
	if d := os.Getenv("KPAAS_CACHE"); d != "" {
		return filepath.Join(d, "toolchain", "bin")
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(d, "kpaas", "toolchain", "bin")
}

// FreePorts returns n distinct TCP ports free on 127.0.0.1 just now.
func FreePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// RemoveEmptyCgroups removes the folder name below every cgroup v1
// hierarchy (/sys/fs/cgroup/*/name), with the empty folders in it, once
// the processes that used them stopped: containerd puts its tasks' and
// pods' cgroups below such a folder and leaves it behind.
func RemoveEmptyCgroups(name string) {
	dirs, _ := filepath.Glob("/sys/fs/cgroup/*/" + name)
	for _, d := range dirs {
		subs, _ := filepath.Glob(d + "/*/")
		for _, sub := range subs {
			if st, err := os.Stat(sub); err == nil && st.IsDir() {
				os.Remove(sub)
			}
		}
		os.Remove(d)
	}
}

// LockedBuffer is a buffer that concurrent writers (a logger's handler)
// and a test reading it may share.
type LockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String is what was written so far.
func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TarTree writes the files below dir into a tar at dest, named by their
// paths below dir (what `ctr images import` takes for an image layout).
func TarTree(dir, dest string) error {
	f, err := os.Create(dest)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir+"/", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		st, err := os.Stat(p)
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Name: rel, Mode: 0o644, Size: st.Size(), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		_, err = io.Copy(tw, in)
		return err
	})
	if err != nil {
		return err
	}
	return tw.Close()
}
