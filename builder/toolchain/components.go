package toolchain

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Versions of everything the toolchain builds. Each Go-built component's
// version must equal the require line of its scratch module under
// toolchain/<module>/go.mod (a test checks this).
const (
	KubernetesVersion = "v1.35.4"
	EtcdVersion       = "v3.6.16"
	ContainerdVersion = "v2.2.9"
	RuncVersion       = "v1.4.3"
	CNIPluginsVersion = "v1.9.1"
	CrictlVersion     = "v1.34.0"
	CoreDNSVersion    = "v1.14.7"
	KubeRouterVersion = "v2.1.0"
	// PauseVersion is the version of build/pause/linux/pause.c shipped in the
	// k8s.io/kubernetes module, and the tag kubeadm v1.35 expects.
	PauseVersion = "3.10.1"
)

// recipeRevision is mixed into every cache key. Bump it when a Finish step or
// the image assembly changes in a way the recorded commands do not show.
const recipeRevision = "1"

// KubernetesCommands are the Kubernetes binaries, all built by one go build.
var KubernetesCommands = []string{
	"kube-apiserver", "kube-controller-manager", "kube-scheduler",
	"kube-proxy", "kubelet", "kubeadm", "kubectl",
}

// CNIPlugins are the containernetworking/plugins binaries (those of the
// upstream linux release tarball), as package path below plugins/.
var CNIPlugins = []string{
	"ipam/dhcp", "ipam/host-local", "ipam/static",
	"main/bridge", "main/dummy", "main/host-device", "main/ipvlan", "main/loopback",
	"main/macvlan", "main/ptp", "main/tap", "main/vlan",
	"meta/bandwidth", "meta/firewall", "meta/portmap", "meta/sbr", "meta/tuning", "meta/vrf",
}

// CNITarball is the file name of the deterministic CNI plugins archive.
var CNITarball = "cni-plugins-linux-amd64-" + CNIPluginsVersion + ".tgz"

// A command is one program run by a component's recipe, in the component's
// scratch module folder. The literal string "$OUT" in Args stands for the
// output folder and "$SRC" the toolchain source folder; both are replaced
// (in Args and Env) when the command runs, so the recorded recipe (and the
// cache key hashed from it) depends on neither temp nor checkout paths.
type command struct {
	Prog string   // "go", "gcc", "strip"
	Args []string // arguments; "$OUT" is the output folder
	Env  []string // KEY=VALUE added to the inherited environment
}

// A component is one unit of the toolchain with its own cache entry.
type component struct {
	Name    string
	Version string
	// Module is the scratch module folder below the toolchain sources, or ""
	// when the component needs no Go module of its own.
	Module string
	// Inputs are files or folders below the toolchain sources (source
	// archives) that the recipe reads as "$SRC/<input>"; their bytes are
	// part of the cache key.
	Inputs []string
	// Outputs are the files the component leaves in its output folder.
	Outputs []string
	// Cold is how long a build from an empty Go build cache takes on 2
	// cores, for the progress line ("25–45 min").
	Cold string
	// Recipe lists the commands that build the outputs. It may look at the
	// resolved environment (module timestamps, file locations).
	Recipe func(r *resolver) ([]command, error)
	// Finish runs after the commands, in the output folder (renames, archives).
	Finish func(out string) error
	// Revision is mixed into the component's cache key: what Finish does
	// that the commands do not show (the files it keeps, the fix-ups it
	// makes). Change it when Finish changes.
	Revision string
}

// components is the literal list of everything that is built, in order
// (Harbor's portal only when asked). Nothing else is built; the images and
// the mirror are assembled from these.
func components(portal bool) []*component {
	l := []*component{
		kubeComponent(),
		etcdComponent(),
		containerdComponent(),
		runcComponent(),
		cniComponent(),
		crictlComponent(),
		corednsComponent(),
		kubeRouterComponent(),
		pauseComponent(),
		netToolsComponent(),
		harborComponent(),
		harborRegistryComponent(),
		harborDebianComponent(),
		localPathProvisionerComponent(),
		platformDebianComponent(),
	}
	if portal {
		l = append(l, harborPortalComponent())
	}
	return l
}

func goBuild(env []string, tags, ldflags string, pkgs ...string) command {
	args := []string{"build", "-trimpath"}
	if tags != "" {
		args = append(args, "-tags", tags)
	}
	args = append(args, "-ldflags", ldflags, "-o", "$OUT/")
	return command{Prog: "go", Args: append(args, pkgs...), Env: env}
}

var static = []string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64"}

func kubeComponent() *component {
	outs := append([]string(nil), KubernetesCommands...)
	return &component{
		Name: "kube", Version: KubernetesVersion, Module: "kube", Outputs: outs,
		Cold: "25–45 min",
		Recipe: func(r *resolver) ([]command, error) {
			// buildDate is the module's publication time on the proxy, so the
			// build is reproducible; gitCommit is not known to the proxy.
			date, err := r.moduleTime("kube", "k8s.io/kubernetes")
			if err != nil {
				return nil, err
			}
			major, minor, _ := strings.Cut(strings.TrimPrefix(KubernetesVersion, "v"), ".")
			minor, _, _ = strings.Cut(minor, ".")
			ld := []string{"-s", "-w"}
			for _, p := range []string{"k8s.io/client-go/pkg/version", "k8s.io/component-base/version"} {
				ld = append(ld,
					"-X", p+".gitVersion="+KubernetesVersion,
					"-X", p+".gitMajor="+major,
					"-X", p+".gitMinor="+minor,
					"-X", p+".gitTreeState=archive",
					"-X", p+".buildDate="+date)
			}
			var pkgs []string
			for _, c := range KubernetesCommands {
				pkgs = append(pkgs, "k8s.io/kubernetes/cmd/"+c)
			}
			// One go build for all commands: they share one compile of the graph.
			return []command{goBuild(static, "", strings.Join(ld, " "), pkgs...)}, nil
		},
	}
}

func etcdComponent() *component {
	return &component{
		Name: "etcd", Version: EtcdVersion, Module: "etcd",
		Cold:    "1–3 min",
		Outputs: []string{"etcd", "etcdctl", "etcdutl"},
		Recipe: func(*resolver) ([]command, error) {
			ld := "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=" + EtcdVersion
			return []command{goBuild(static, "", ld,
				"go.etcd.io/etcd/server/v3", "go.etcd.io/etcd/etcdctl/v3", "go.etcd.io/etcd/etcdutl/v3")}, nil
		},
		// The server's main package is the module root, so go names it "server".
		Finish: func(out string) error {
			return os.Rename(filepath.Join(out, "server"), filepath.Join(out, "etcd"))
		},
	}
}

func containerdComponent() *component {
	const cd = "github.com/containerd/containerd/v2"
	ld := "-s -w -X " + cd + "/version.Version=" + ContainerdVersion + " -X " + cd + "/version.Package=" + cd
	tags := "urfave_cli_no_docs osusergo netgo static_build" // containerd's Makefile with STATIC=1
	return &component{
		Name: "containerd", Version: ContainerdVersion, Module: "containerd",
		Cold:    "1–4 min",
		Outputs: []string{"containerd", "ctr", "containerd-shim-runc-v2"},
		Recipe: func(*resolver) ([]command, error) {
			return []command{
				goBuild(static, tags, ld, cd+"/cmd/containerd", cd+"/cmd/ctr"),
				goBuild(static, tags+" no_grpc", ld, cd+"/cmd/containerd-shim-runc-v2"),
			}, nil
		},
	}
}

func runcComponent() *component {
	return &component{
		Name: "runc", Version: RuncVersion, Module: "runc", Outputs: []string{"runc"},
		Cold: "under a minute",
		Recipe: func(r *resolver) ([]command, error) {
			// runc needs cgo (libcontainer/nsenter) and libseccomp.a
			// (Debian: libseccomp-dev); linked as a static PIE like upstream.
			if _, err := os.Stat("/usr/lib/x86_64-linux-gnu/libseccomp.a"); err != nil {
				return nil, fmt.Errorf("runc needs the static libseccomp (apt-get install libseccomp-dev): %w", err)
			}
			ld := "-s -w -X main.gitCommit=" + RuncVersion + " -linkmode external -extldflags -static-pie"
			c := goBuild([]string{"CGO_ENABLED=1", "GOOS=linux", "GOARCH=amd64"},
				"seccomp urfave_cli_no_docs netgo osusergo", ld, "github.com/opencontainers/runc")
			c.Args = append([]string{"build", "-buildmode=pie"}, c.Args[1:]...)
			return []command{c}, nil
		},
	}
}

func cniComponent() *component {
	const mod = "github.com/containernetworking/plugins"
	var outs, pkgs []string
	for _, p := range CNIPlugins {
		outs = append(outs, filepath.Base(p))
		pkgs = append(pkgs, mod+"/plugins/"+p)
	}
	plugins := append([]string(nil), outs...)
	return &component{
		Name: "cni", Version: CNIPluginsVersion, Module: "cni",
		Cold:    "under a minute",
		Outputs: append(outs, CNITarball),
		Recipe: func(*resolver) ([]command, error) {
			ld := "-s -w -X " + mod + "/pkg/utils/buildversion.BuildVersion=" + CNIPluginsVersion
			return []command{goBuild(static, "", ld, pkgs...)}, nil
		},
		Finish: func(out string) error {
			return writeTarGz(filepath.Join(out, CNITarball), out, plugins)
		},
	}
}

func crictlComponent() *component {
	return &component{
		Name: "crictl", Version: CrictlVersion, Module: "crictl", Outputs: []string{"crictl"},
		Cold: "under a minute",
		Recipe: func(*resolver) ([]command, error) {
			ld := "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=" + CrictlVersion
			return []command{goBuild(static, "", ld, "sigs.k8s.io/cri-tools/cmd/crictl")}, nil
		},
	}
}

func corednsComponent() *component {
	return &component{
		Name: "coredns", Version: CoreDNSVersion, Module: "coredns", Outputs: []string{"coredns"},
		Cold: "1–6 min",
		Recipe: func(*resolver) ([]command, error) {
			ld := "-s -w -X github.com/coredns/coredns/coremain.GitCommit=" + CoreDNSVersion
			return []command{goBuild(static, "", ld, "github.com/coredns/coredns")}, nil
		},
	}
}

func kubeRouterComponent() *component {
	const mod = "github.com/cloudnativelabs/kube-router/v2"
	return &component{
		Name: "kube-router", Version: KubeRouterVersion, Module: "kube-router", Outputs: []string{"kube-router"},
		Cold: "1–3 min",
		Recipe: func(r *resolver) ([]command, error) {
			date, err := r.moduleTime("kube-router", mod)
			if err != nil {
				return nil, err
			}
			ld := "-s -w -X " + mod + "/pkg/version.Version=" + KubeRouterVersion + " -X " + mod + "/pkg/version.BuildDate=" + date
			return []command{goBuild(static, "", ld, mod+"/cmd/kube-router")}, nil
		},
	}
}

func pauseComponent() *component {
	return &component{
		// pause.c comes from the k8s.io/kubernetes module, so it shares kube's
		// scratch module; it is built the way upstream's Makefile does.
		Name: "pause", Version: PauseVersion, Module: "kube", Outputs: []string{"pause"},
		Cold: "seconds",
		Recipe: func(r *resolver) ([]command, error) {
			dir, err := r.moduleDir("kube", "k8s.io/kubernetes")
			if err != nil {
				return nil, err
			}
			src := filepath.Join(dir, "build", "pause", "linux", "pause.c")
			return []command{
				{Prog: "gcc", Args: []string{"-Os", "-Wall", "-Werror", "-static", "-DVERSION=v" + PauseVersion, "-o", "$OUT/pause", src}},
				{Prog: "strip", Args: []string{"$OUT/pause"}},
			}, nil
		},
	}
}
