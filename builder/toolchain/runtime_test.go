package toolchain

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"

	"kpaas.dev/appliance/internal/testenv"
)

// TestRuntimeRunsImages starts the built containerd (private root, state and
// socket), imports an OCI layout holding the pause, etcd and kube-proxy
// images assembled from the built binaries, and runs them with the built shim
// and runc: pause keeps running, etcd and kube-proxy print their versions, and
// the Debian iptables in the kube-proxy image runs. It needs root and a built
// toolchain; it is skipped otherwise.
func TestRuntimeRunsImages(t *testing.T) {
	_, bin := builtToolchain(t, "pause", "etcd", "kube-proxy", NetToolsTar)
	dir := t.TempDir()
	// An OCI layout with the three images, as a tar for ctr import.
	lay := filepath.Join(dir, "layout")
	p, err := layout.Write(lay, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	base, err := baseLayer(time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	dirs := map[string]string{"pause": bin, "etcd": bin, "kube": bin, "nettools": bin}
	for _, s := range imageSpecs(false) {
		if !strings.Contains(s.Ref, "/pause:") && !strings.Contains(s.Ref, "/etcd:") && !strings.Contains(s.Ref, "/kube-proxy:") {
			continue
		}
		img, err := buildImage(s, base, dirs, time.Unix(0, 0))
		if err != nil {
			t.Fatal(err)
		}
		if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{RefNameAnnotation: s.Ref})); err != nil {
			t.Fatal(err)
		}
	}
	ctr := startContainerdWith(t, bin, lay)
	imgs, _ := ctr("images", "ls", "-q")
	t.Logf("imported:\n%s", imgs)

	pause := "registry.k8s.io/pause:" + PauseVersion
	if _, err := ctr("run", "-d", pause, "pause1"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctr("task", "kill", "-s", "SIGKILL", "pause1")
		time.Sleep(time.Second)
		ctr("task", "delete", "-f", "pause1")
		ctr("containers", "delete", "pause1")
	})
	tasks, err := ctr("task", "ls")
	if err != nil || !strings.Contains(tasks, "RUNNING") {
		t.Errorf("pause task not running: %v\n%s", err, tasks)
	}

	etcdRef := "registry.k8s.io/etcd:" + EtcdVersion[1:] + "-0"
	out, err := ctr("run", "--rm", etcdRef, "etcd-version", "/usr/local/bin/etcd", "--version")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "etcd Version: "+EtcdVersion[1:]) {
		t.Errorf("etcd --version in the container printed:\n%s", out)
	}

	proxy := "registry.k8s.io/kube-proxy:" + KubernetesVersion
	// ipset exits 1 after printing its version: without CAP_NET_ADMIN it
	// cannot ask the kernel for its protocol. The output is what counts.
	for i, c := range []struct{ prog, want string }{
		{"kube-proxy", "Kubernetes " + KubernetesVersion},
		{"iptables", "iptables v1.8"},
		{"ipset", "ipset v7"},
		{"conntrack", "conntrack v1"},
	} {
		out, err := ctr("run", "--rm", proxy, fmt.Sprintf("proxy%d", i), c.prog, "--version")
		if !strings.Contains(out, c.want) {
			t.Errorf("%s --version in the kube-proxy image: %v\n%s", c.prog, err, out)
		}
	}
}

// builtToolchain is the toolchain cache and its bin/ folder (or
// $KPAAS_TOOLCHAIN_DIR) for a test that runs the built containerd and
// runc as root, with the outputs it needs besides those: it skips in
// -short mode and when not root, and skips (fails in CI) when something
// is not built.
func builtToolchain(t *testing.T, outputs ...string) (cache, bin string) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts containerd")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to run containers")
	}
	cache, err := DefaultCacheDir()
	if err != nil {
		testenv.SkipOrFail(t, err.Error())
	}
	bin = BinDir(cache)
	if d := os.Getenv("KPAAS_TOOLCHAIN_DIR"); d != "" {
		bin = d
	}
	for _, b := range append([]string{"containerd", "containerd-shim-runc-v2", "ctr", "runc"}, outputs...) {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			testenv.SkipOrFailf(t, "%s not built in %s: run `kpaas toolchain build` first", b, bin)
		}
	}
	return cache, bin
}

// startContainerd starts the built containerd with a private root, state
// and socket, and returns a ctr runner in namespace kpaas-test. Everything
// is stopped and removed when t ends.
func startContainerd(t *testing.T, bin string) func(args ...string) (string, error) {
	t.Helper()
	// ctr puts task cgroups below /kpaas-test in every v1 hierarchy; remove
	// the (then empty) folders once containerd stopped.
	t.Cleanup(func() { testenv.RemoveEmptyCgroups("kpaas-test") })
	dir, err := os.MkdirTemp("", "ctdtest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })

	sock := filepath.Join(dir, "containerd.sock")
	config := fmt.Sprintf(`version = 3
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %q
[ttrpc]
  address = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, sock+".ttrpc")
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"))
	logf, _ := os.Create(filepath.Join(dir, "containerd.log"))
	ctd := exec.Command(filepath.Join(bin, "containerd"), "--config", filepath.Join(dir, "config.toml"))
	ctd.Env, ctd.Stdout, ctd.Stderr = env, logf, logf
	ctd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := ctd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctd.Process.Signal(syscall.SIGTERM)
		ctd.Wait()
		logf.Close()
		if t.Failed() {
			data, _ := os.ReadFile(logf.Name())
			t.Logf("containerd log:\n%s", tail(string(data), 6000))
		}
	})

	ctr := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, filepath.Join(bin, "ctr"), append([]string{"--address", sock, "-n", "kpaas-test"}, args...)...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			return string(out), fmt.Errorf("ctr %s: %w\n%s", strings.Join(args, " "), err, out)
		}
		return string(out), nil
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := ctr("version"); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return ctr
}

// startContainerdWith starts the built containerd (startContainerd) and
// imports the images of the OCI layout lay into it.
func startContainerdWith(t *testing.T, bin, lay string) func(args ...string) (string, error) {
	t.Helper()
	archive := lay + ".tar"
	if err := testenv.TarTree(lay, archive); err != nil {
		t.Fatal(err)
	}
	ctr := startContainerd(t, bin)
	if _, err := ctr("images", "import", archive); err != nil {
		t.Fatal(err)
	}
	return ctr
}

// cachedImagesLayout writes an OCI layout below dir with only the named
// images of the toolchain cache's image layout (as the build made them),
// for ctr import. It skips (fails in CI) when one is not built.
func cachedImagesLayout(t *testing.T, cache, dir string, refs ...string) string {
	t.Helper()
	src, err := layout.FromPath(ImagesDir(cache))
	if err != nil {
		testenv.SkipOrFailf(t, "no image layout in %s: run `kpaas toolchain build` first (%v)", ImagesDir(cache), err)
	}
	idx, err := src.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	lay := filepath.Join(dir, "layout")
	p, err := layout.Write(lay, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	for _, ref := range refs {
		i := slices.IndexFunc(im.Manifests, func(d v1.Descriptor) bool { return d.Annotations[RefNameAnnotation] == ref })
		if i < 0 {
			testenv.SkipOrFailf(t, "the image layout in %s lacks %s: run `kpaas toolchain build`", ImagesDir(cache), ref)
		}
		img, err := idx.Image(im.Manifests[i].Digest)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{RefNameAnnotation: ref})); err != nil {
			t.Fatal(err)
		}
	}
	return lay
}
