package toolchain

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Harbor is built from its own source archives, kept in toolchain/harbor/
// (Harbor is not a module the proxy serves, and its images cannot be
// pulled offline). Its Go dependencies still come from the module proxy,
// pinned by the go.sum inside the archive.
const (
	HarborVersion = "v2.15.2"
	// HarborCommit is the commit of goharbor/harbor tag v2.15.2 the archive
	// was made from (git archive).
	HarborCommit = "080b0220574cc853ae1e2946ce7a5610ba855757"
	// HarborRegistryVersion is the goharbor/distribution fork Harbor
	// v2.15.2 ships (it names it v2.8.3-harbor.1): release/2.8 at
	// HarborRegistryCommit.
	HarborRegistryVersion = "v2.8.3"
	HarborRegistryCommit  = "ea065fef1275f79cb54059dd532af634cd6904d3"
	// SwaggerVersion is the go-swagger Harbor's Makefile generates its REST
	// server with; the generated code is not in Harbor's git tree.
	SwaggerVersion = "v0.33.1"
)

// Source archives below the toolchain source folder. They are inputs of
// the cache key, byte for byte.
const (
	harborSource   = "harbor/harbor-" + HarborVersion + ".tar.gz"
	registrySource = "harbor/distribution-harbor-release-2.8-ea065fef.tar.gz"
	// pinnipedSource stands in for go.pinniped.dev, which the proxy refuses:
	// the one package Harbor imports, with a go.mod of its own.
	pinnipedSource = "harbor/pinniped-pkce"
)

// Outputs of the Harbor components.
const (
	HarborCore        = "harbor_core"
	HarborJobservice  = "harbor_jobservice"
	HarborRegistryctl = "harbor_registryctl"
	HarborRegistry    = "harbor-registry"
	// HarborSupportTar holds the non-Go files Harbor's containers carry,
	// below their source paths: make/migrations/ (core runs them at start),
	// src/core/views/, icons/, and the entrypoints and database scripts of
	// make/photon/.
	HarborSupportTar = "harbor-support.tar"
)

// harborSupport are the paths of the source tree kept in HarborSupportTar.
var harborSupport = []string{
	"LICENSE",
	"icons",
	"make/migrations",
	"make/photon/common/install_cert.sh",
	"make/photon/core/entrypoint.sh",
	"make/photon/db",
	"make/photon/jobservice/entrypoint.sh",
	"make/photon/registry/entrypoint.sh",
	"make/photon/registryctl/start.sh",
	"make/photon/valkey/redis.conf",
	"src/core/views",
}

func harborComponent() *component {
	tree := "harbor-" + HarborVersion
	const pkg = "github.com/goharbor/harbor/src/pkg/version"
	ld := "-s -w -X " + pkg + ".GitCommit=" + HarborCommit[:8] + " -X " + pkg + ".ReleaseVersion=" + HarborVersion
	return &component{
		Name: "harbor", Version: HarborVersion,
		Inputs:   []string{harborSource, pinnipedSource},
		Outputs:  []string{HarborCore, HarborJobservice, HarborRegistryctl, HarborSupportTar},
		Cold:     "8–12 min",
		Revision: "support: " + strings.Join(harborSupport, " "),
		Recipe: func(*resolver) ([]command, error) {
			swagger := "github.com/go-swagger/go-swagger/cmd/swagger@" + SwaggerVersion
			// The generation step of Harbor's Makefile (gen_apis), without
			// its container.
			gen := strings.Join([]string{
				"mkdir -p src/server/v2.0",
				"../tools/swagger generate server --quiet --template-dir=tools/swagger/templates --exclude-main" +
					" --additional-initialism=CVE --additional-initialism=GC --additional-initialism=OIDC" +
					" -f api/v2.0/swagger.yaml -A harbor --target src/server/v2.0",
			}, " && ")
			src := tree + "/src"
			build := goBuild(static, "", ld, "./core", "./jobservice", "./registryctl")
			build.Args = append([]string{"-C", src}, build.Args...)
			return []command{
				{Prog: "tar", Args: []string{"-xzf", "$SRC/" + harborSource}},
				{Prog: "cp", Args: []string{"-R", "$SRC/" + pinnipedSource, "pinniped-pkce"}},
				{Prog: "go", Args: []string{"install", swagger}, Env: []string{"GOBIN=$OUT/tools", "CGO_ENABLED=0"}},
				{Prog: "sh", Args: []string{"-ec", "cd " + tree + " && " + gen}},
				{Prog: "go", Args: []string{"-C", src, "mod", "edit", "-replace", "go.pinniped.dev=../../pinniped-pkce"}},
				build,
			}, nil
		},
		Finish: func(out string) error {
			for from, to := range map[string]string{"core": HarborCore, "jobservice": HarborJobservice, "registryctl": HarborRegistryctl} {
				if err := os.Rename(filepath.Join(out, from), filepath.Join(out, to)); err != nil {
					return err
				}
			}
			if err := keepTar(filepath.Join(out, HarborSupportTar), filepath.Join(out, tree), harborSupport); err != nil {
				return err
			}
			return removeAll(out, tree, "pinniped-pkce", "tools")
		},
	}
}

func harborRegistryComponent() *component {
	// The fork predates modules; Harbor builds it in GOPATH mode from its
	// committed vendor/ folder (make/photon/registry/Dockerfile.binary).
	const imp = "github.com/docker/distribution"
	ld := "-s -w -X " + imp + "/version.Version=" + HarborRegistryVersion + " -X " + imp + "/version.Revision=" + HarborRegistryCommit
	build := goBuild(slices.Concat(static, []string{"GO111MODULE=off", "GOPATH=$OUT/gopath", "GOFLAGS=-buildvcs=false"}),
		"include_oss include_gcs", ld, imp+"/cmd/registry")
	build.Args = append([]string{"-C", "gopath/src/" + imp}, build.Args...)
	return &component{
		Name: "harbor-registry", Version: HarborRegistryVersion,
		Inputs:  []string{registrySource},
		Outputs: []string{HarborRegistry},
		Cold:    "about a minute",
		Recipe: func(*resolver) ([]command, error) {
			return []command{
				{Prog: "mkdir", Args: []string{"-p", "gopath/src/" + imp}},
				{Prog: "tar", Args: []string{"-xzf", "$SRC/" + registrySource, "-C", "gopath/src/" + imp, "--strip-components=1"}},
				build,
			}, nil
		},
		Finish: func(out string) error {
			if err := os.Rename(filepath.Join(out, "registry"), filepath.Join(out, HarborRegistry)); err != nil {
				return err
			}
			return removeAll(out, "gopath")
		},
	}
}

// keepTar writes the listed paths of the tree below root (files or whole
// folders) as a deterministic tar, under their paths relative to root.
func keepTar(dest, root string, paths []string) error {
	stage, err := os.MkdirTemp(filepath.Dir(dest), ".keep-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(stage)
	for _, p := range paths {
		if err := copyTree(filepath.Join(root, p), filepath.Join(stage, p)); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
	}
	return writeTreeTar(dest, stage, time.Unix(0, 0))
}

// copyTree copies a file, link or folder (recursively), keeping modes.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		st, err := os.Lstat(p)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.MkdirAll(target, st.Mode().Perm())
		case st.Mode()&os.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		default:
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(target, data, st.Mode().Perm())
		}
	})
}

// removeAll deletes build trees from an output folder. Go's module cache
// leaves read-only folders, so write permission is restored first.
func removeAll(out string, names ...string) error {
	for _, n := range names {
		p := filepath.Join(out, n)
		filepath.WalkDir(p, func(q string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				os.Chmod(q, 0o755)
			}
			return nil
		})
		if err := os.RemoveAll(p); err != nil {
			return err
		}
	}
	return nil
}
