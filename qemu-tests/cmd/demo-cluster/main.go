// Command demo-cluster boots the demo cluster (`make demo-cluster`): every
// node of a `kpaas cluster init` site from one media image under QEMU
// (software emulation), on a closed network, and prints how to reach the
// cluster with kubectl once every node's agent says it is ready. The
// nodes' disks are overlays kept in --dir, so booting again resumes the
// same cluster. Ctrl-C powers the nodes off.
//
//	go run ./qemu-tests/cmd/demo-cluster --image out/demo.qcow2 --site out/demo-site --dir out/demo-cluster --kubectl out/mirror/files/kubectl
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"kpaas.dev/appliance/qemu-tests/cluster"
	"kpaas.dev/appliance/qemu-tests/vm"
)

func main() {
	var o cluster.Options
	flag.StringVar(&o.Image, "image", "out/demo.qcow2", "the media's qcow2 image")
	flag.StringVar(&o.Site, "site", "out/demo-site", "the `kpaas cluster init` folder")
	flag.StringVar(&o.Dir, "dir", "out/demo-cluster", "where the nodes' disks are kept")
	flag.StringVar(&o.Kubectl, "kubectl", "out/mirror/files/kubectl", "kubectl")
	flag.IntVar(&o.APIPort, "api-port", 16443, "the port on 127.0.0.1 forwarded to the API server")
	flag.IntVar(&o.WorkerNice, "worker-nice", 2, "the niceness of the workers' QEMU, so that the control plane keeps up on a host with fewer cores than the cluster's vCPUs (0: none)")
	timeout := flag.Duration("timeout", 60*time.Minute, "how long the nodes may take to be ready")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, o, *timeout))
}

func run(ctx context.Context, o cluster.Options, timeout time.Duration) (code int) {
	t := &runner{name: "demo-cluster"}
	defer func() {
		if r := recover(); r != nil && r != errFatal {
			panic(r)
		}
		if t.Failed() {
			code = 1
		}
		t.cleanup()
	}()
	for _, p := range []string{o.Image, filepath.Join(o.Site, "cluster.yaml"), o.Kubectl} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%v: run make demo first", err)
		}
	}
	c := cluster.New(t, o)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range c.Config.Nodes {
		n := &c.Config.Nodes[i]
		v := c.Boot(n.Name)
		fmt.Printf("demo-cluster: %s (%s) powered on; console: %s\n", n.Name, n.Role, filepath.Join(v.Dir(), "serial.log"))
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := v.Wait(cluster.ReadyLine(n), timeout); err != nil {
				t.Errorf("%s: %v", n.Name, err)
				return
			}
			fmt.Printf("demo-cluster: %s ready after %s\n", n.Name, time.Since(start).Round(time.Second))
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		fmt.Println("demo-cluster: interrupted; powering the nodes off")
		return 1
	}
	if t.Failed() {
		return 1
	}
	kc := c.Kubeconfig()
	fmt.Printf("\ndemo-cluster: every node is ready after %s. Reach the cluster with:\n\n  export KUBECONFIG=%s\n  %s get nodes -o wide\n\nThe API is forwarded to 127.0.0.1:%d only. Ctrl-C powers the nodes off; `make demo-cluster` again boots the same cluster.\n",
		time.Since(start).Round(time.Second), kc, o.Kubectl, c.APIPort())
	<-ctx.Done()
	fmt.Println("demo-cluster: powering the nodes off")
	return 0
}

// runner is what the QEMU harness needs of a test, for a command: failures
// are printed, Fatal unwinds to run, cleanups run in reverse at the end.
type runner struct {
	name     string
	mu       sync.Mutex
	failed   bool
	cleanups []func()
}

var errFatal = fmt.Errorf("fatal")

func (r *runner) Helper()      {}
func (r *runner) Name() string { return r.name }
func (r *runner) Logf(format string, args ...any) {
	if os.Getenv("KPAAS_DEBUG") != "" {
		fmt.Fprintf(os.Stderr, format+"\n", args...)
	}
}
func (r *runner) Errorf(format string, args ...any) {
	r.mu.Lock()
	r.failed = true
	r.mu.Unlock()
	fmt.Fprintf(os.Stderr, "demo-cluster: "+format+"\n", args...)
}
func (r *runner) Fatal(args ...any) { r.Fatalf("%s", fmt.Sprint(args...)) }
func (r *runner) Fatalf(format string, args ...any) {
	r.Errorf(format, args...)
	panic(errFatal)
}
func (r *runner) Skip(args ...any) { r.Fatal(args...) }
func (r *runner) Cleanup(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cleanups = append(r.cleanups, f)
}
func (r *runner) Failed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failed
}
func (r *runner) cleanup() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
}

var _ vm.T = (*runner)(nil)
