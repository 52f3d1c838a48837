package phases

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"time"

	"kpaas.dev/appliance/internal/atomicfile"
	"kpaas.dev/appliance/internal/containerd"
	"kpaas.dev/appliance/internal/retry"
)

// Files and places of the runtime phase.
const (
	containerdConfig = "/etc/containerd/config.toml"
	containerdHosts  = "/etc/containerd/certs.d"
	containerdUnit   = "/etc/systemd/system/containerd.service"
	crictlConfig     = "/etc/crictl.yaml"
	cniBinDir        = "/opt/cni/bin"
	cniConfDir       = "/etc/cni/net.d"
	// cniTarballs is where `kpaas image build` puts the bundle's CNI
	// plugins tarball (its file target).
	cniTarballs = "/opt/cni/kpaas/cni-plugins-*.tgz"
	criSocket   = "unix:///run/containerd/containerd.sock"
)

// cniPlugins are the plugins the pod network needs on every node.
var cniPlugins = []string{"bridge", "host-local", "loopback", "portmap"}

// runtime sets up containerd: systemd cgroups, the bundle's pause image,
// and a hosts.toml for every upstream registry the bundle names whose only
// host is the node's own seed; the CNI plugins from the bundle's tarball.
func runtime() Phase {
	return Phase{
		Name: "runtime",
		Plan: func(e *Env) []string {
			fs, err := runtimeFiles(e)
			if err != nil {
				return []string{"cannot plan: " + err.Error()}
			}
			pulls := "image pulls go to the node's seed at " + seedURL(e)
			if h := harborMirrored(e); h != "" {
				pulls = "image pulls go to the cluster's Harbor at " + h + " first (a project per upstream registry), then to the node's seed at " + seedURL(e)
			} else if h := harborRegistry(e); h != "" {
				pulls += "; to the cluster's Harbor at " + h + " first once Harbor holds the bundle (the harbor phase)"
			}
			return append(filePlan(fs), pulls,
				"unpack "+cniTarballs+" into "+cniBinDir,
				"systemctl daemon-reload; systemctl enable containerd; systemctl restart containerd",
				"wait until crictl info answers")
		},
		Check: func(ctx context.Context, e *Env) (bool, error) {
			fs, err := runtimeFiles(e)
			if err != nil {
				return false, err
			}
			if !e.filesInPlace(fs) || !cniInstalled(e) {
				return false, nil
			}
			return runtimeHealthy(ctx, e), nil
		},
		Run: func(ctx context.Context, e *Env) error {
			fs, err := runtimeFiles(e)
			if err != nil {
				return err
			}
			changed, err := e.writeFiles(fs)
			if err != nil {
				return err
			}
			if err := installCNI(e); err != nil {
				return err
			}
			if _, err := e.Host.Run(ctx, "systemctl", "daemon-reload"); err != nil {
				return err
			}
			action := "start"
			if changed {
				action = "restart"
			}
			if _, err := e.Host.Run(ctx, "systemctl", "enable", "containerd"); err != nil {
				return err
			}
			if _, err := e.Host.Run(ctx, "systemctl", action, "containerd"); err != nil {
				return err
			}
			return e.waitFor(ctx, "containerd to answer", 60, func() bool { return runtimeHealthy(ctx, e) })
		},
		Retry: retry.Policy{Attempts: 2, Base: 5 * time.Second},
	}
}

func runtimeHealthy(ctx context.Context, e *Env) bool {
	if _, err := e.Host.Run(ctx, "systemctl", "is-active", "--quiet", "containerd"); err != nil {
		return false
	}
	_, err := e.Host.Run(ctx, "crictl", "info")
	return err == nil
}

// seedURL is the node's seed as containerd reaches it.
func seedURL(e *Env) string { return fmt.Sprintf("http://127.0.0.1:%d", e.Cluster.Seed.Port) }

func runtimeFiles(e *Env) ([]file, error) {
	pause, err := e.Lock.ImageTag("registry.k8s.io/pause")
	if err != nil {
		return nil, err
	}
	fs := []file{
		{containerdConfig, 0o644, containerdTOML("registry.k8s.io/pause:" + pause)},
		{containerdUnit, 0o644, []byte(containerdService)},
		{crictlConfig, 0o644, []byte("runtime-endpoint: " + criSocket + "\nimage-endpoint: " + criSocket + "\ntimeout: 30\n")},
	}
	// The cluster's Harbor first once the node switched to it (see
	// harborMirrored): containerd moves on to the seed while Harbor is
	// unreachable or lacks an image.
	hs, err := hostsFiles(e, harborMirrored(e))
	if err != nil {
		return nil, err
	}
	return append(fs, hs...), nil
}

// hostsFiles are containerd's hosts.toml files: for every upstream
// registry the bundle names, the Harbor at harborURL first when it is
// set, then the node's seed; and, when the site has a Harbor, its own
// host for the images of its projects.
func hostsFiles(e *Env, harborURL string) ([]file, error) {
	entries, err := e.Bundle.Entries()
	if err != nil {
		return nil, err
	}
	mirror := seedURL(e)
	if err := containerd.ValidateMirror(mirror); err != nil {
		return nil, err
	}
	var fs []file
	for _, u := range containerd.Upstreams(entries) {
		fs = append(fs, file{path.Join(containerdHosts, u, "hosts.toml"), 0o644, containerd.HostsTOML(u, containerd.Mirrors(u, harborURL, mirror)...)})
	}
	if own := harborRegistry(e); own != "" {
		// The images users push into Harbor's own projects, asked of
		// Harbor alone (plain HTTP when its URL says so) from the start.
		host, data, err := containerd.HarborHost(own)
		if err != nil {
			return nil, err
		}
		fs = append(fs, file{path.Join(containerdHosts, host, "hosts.toml"), 0o644, data})
	}
	return fs, nil
}

func containerdTOML(pause string) []byte {
	return []byte(`# Written by kpaas-agent. Images come from the cluster's Harbor, when the
# platform has one, and from the node's registry seed (see ` + containerdHosts + `).
version = 3
root = "/var/lib/containerd"
state = "/run/containerd"

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "` + pause + `"
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = "` + containerdHosts + `"

[plugins.'io.containerd.cri.v1.runtime']
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["` + cniBinDir + `"]
    conf_dir = "` + cniConfDir + `"
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
      BinaryName = "/usr/local/sbin/runc"
      SystemdCgroup = true
`)
}

const containerdService = `# Written by kpaas-agent.
[Unit]
Description=containerd container runtime
After=network.target local-fs.target

[Service]
ExecStartPre=-/sbin/modprobe overlay
ExecStart=/usr/local/bin/containerd
Type=notify
Delegate=yes
KillMode=process
Restart=always
RestartSec=5
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
OOMScoreAdjust=-999

[Install]
WantedBy=multi-user.target
`

func cniInstalled(e *Env) bool {
	for _, p := range cniPlugins {
		if !e.Host.Exists(path.Join(cniBinDir, p)) {
			return false
		}
	}
	return true
}

// installCNI unpacks the bundle's CNI plugins tarball into /opt/cni/bin,
// each file atomically.
func installCNI(e *Env) error {
	tgzs, err := e.Host.Glob(cniTarballs)
	if err != nil {
		return err
	}
	if len(tgzs) != 1 {
		return fmt.Errorf("want one CNI plugins tarball at %s (a file artifact of the bundle), found %d", cniTarballs, len(tgzs))
	}
	f, err := os.Open(e.Host.Path(tgzs[0]))
	if err != nil {
		return err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return fmt.Errorf("%s: %w", tgzs[0], err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("%s: %w", tgzs[0], err)
		}
		name := path.Clean(strings.TrimPrefix(h.Name, "./"))
		if h.Typeflag != tar.TypeReg || strings.Contains(name, "/") || name == "." || name == ".." {
			continue // plugins sit at the top of the tarball
		}
		// Streamed to its place: held in memory, the plugins (about 4 MB
		// each) made this phase the agent's memory peak (+40 MiB).
		err = atomicfile.Write(e.Host.Path(path.Join(cniBinDir, name)), 0o755, func(f *os.File) error {
			_, err := io.Copy(f, io.LimitReader(tr, 256<<20))
			return err
		})
		if err != nil {
			return fmt.Errorf("%s: %s: %w", tgzs[0], name, err)
		}
	}
	if !cniInstalled(e) {
		return fmt.Errorf("%s lacks one of %v", tgzs[0], cniPlugins)
	}
	return nil
}

// waitFor polls ok about once a second, tries times at most.
func (e *Env) waitFor(ctx context.Context, what string, tries int, ok func() bool) error {
	for i := 0; i < tries; i++ {
		if ok() {
			return nil
		}
		if err := e.sleep(ctx, secondDur); err != nil {
			return err
		}
	}
	return retry.Retryable(fmt.Errorf("timed out waiting for %s", what))
}

const secondDur = time.Second
