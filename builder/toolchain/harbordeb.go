package toolchain

import (
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Harbor's containers need a shell and, for its database, cache and front
// proxy, PostgreSQL, Redis and nginx. Harbor's own images take them from
// Photon OS; these come from the build host's Debian 12 archive, like the
// netfilter tools, as one layer per group. Each group's packages are the
// Depends closure of its roots minus what an earlier group (base) has and
// minus what no container runs (maintainer scripts' helpers, perl,
// documentation, PostgreSQL's LLVM JIT). The build checks that every
// shared library any ELF file of a group needs is in the group or in base.
type debGroup struct {
	Name     string
	Packages []string
}

// HarborDebianGroups are the Debian layers of Harbor's images. Output
// harbor-deb-<name>.tar each.
var HarborDebianGroups = []debGroup{
	{"base", []string{
		"libc6", "libgcc-s1", "dash", "bash", "coreutils", "debianutils", "findutils", "grep", "sed",
		"libacl1", "libattr1", "libgmp10", "libpcre2-8-0", "libselinux1", "libtinfo6", "tzdata",
	}},
	{"db", []string{
		"postgresql-15", "postgresql-client-15", "libpq5",
		"libaudit-common", "libaudit1", "libcap-ng0", "libcap2", "libcom-err2", "libdb5.3", "libffi8",
		"libgcrypt20", "libgnutls30", "libgpg-error0", "libgssapi-krb5-2", "libhogweed6", "libicu72",
		"libidn2-0", "libk5crypto3", "libkeyutils1", "libkrb5-3", "libkrb5support0", "libldap-2.5-0",
		"liblz4-1", "liblzma5", "libnettle8", "libp11-kit0", "libpam0g", "libreadline8", "libsasl2-2",
		"libsasl2-modules-db", "libssl3", "libstdc++6", "libsystemd0", "libtasn1-6", "libunistring2",
		"libuuid1", "libxml2", "libxslt1.1", "libzstd1", "zlib1g",
	}},
	{"redis", []string{
		"redis-server", "redis-tools", "libatomic1", "libcap2", "libgcrypt20", "libgpg-error0",
		"libjemalloc2", "liblz4-1", "liblzf1", "liblzma5", "libssl3", "libstdc++6", "libsystemd0", "libzstd1",
	}},
	{"nginx", []string{"nginx", "nginx-common", "libcrypt1", "libssl3", "zlib1g"}},
}

// HarborPostgresVersion is the PostgreSQL major version of Debian 12, the
// one the database image runs.
const HarborPostgresVersion = "15"

// harborDebTar is the output name of a group's layer.
func harborDebTar(group string) string { return "harbor-deb-" + group + ".tar" }

// i18nPackage provides the locale sources: initdb is run with
// --lc-collate=en_US.UTF-8 by Harbor's database scripts, so the database
// layer carries that one compiled locale (locales-all would add 200 MB).
const i18nPackage = "locales"

func harborDebianComponent() *component {
	var outs []string
	for _, g := range HarborDebianGroups {
		outs = append(outs, harborDebTar(g.Name))
	}
	return &component{
		Name: "harbor-debian", Version: "debian", Outputs: outs,
		Cold: "under a minute (apt download)",
		// finishHarborDebian: dash as /bin/sh, listen_addresses, no JIT,
		// nginx logs to stdout/stderr, docs and init scripts dropped.
		Revision: "1",
		Recipe: func(r *resolver) ([]command, error) {
			all := []string{i18nPackage}
			for _, g := range HarborDebianGroups {
				all = append(all, g.Packages...)
			}
			slices.Sort(all)
			all = slices.Compact(all)
			pinned, err := r.debianVersions(all)
			if err != nil {
				return nil, err
			}
			var script strings.Builder
			for _, g := range HarborDebianGroups {
				fmt.Fprintf(&script, "mkdir -p root-%s\nfor p in %s; do dpkg-deb -x \"${p}\"_*.deb root-%s; done\n",
					g.Name, strings.Join(g.Packages, " "), g.Name)
			}
			fmt.Fprintf(&script, "dpkg-deb -x %s_*.deb i18n\n", i18nPackage)
			script.WriteString("mkdir -p root-db/usr/lib/locale\n")
			return []command{
				{Prog: "apt-get", Args: append([]string{"download", "-q"}, pinned...)},
				{Prog: "sh", Args: []string{"-ec", script.String()}},
				{Prog: "localedef", Args: []string{"-i", "en_US", "-f", "UTF-8", "$OUT/root-db/usr/lib/locale/en_US.UTF-8"},
					Env: []string{"I18NPATH=$OUT/i18n/usr/share/i18n"}},
				{Prog: "sh", Args: []string{"-ec", "rm -rf i18n *.deb"}},
			}, nil
		},
		Finish: finishHarborDebian,
	}
}

// finishHarborDebian adjusts the trees the way Harbor's Photon Dockerfiles
// adjust theirs, checks every group's shared libraries, and writes each
// group as a deterministic tar.
func finishHarborDebian(out string) error {
	root := func(g string) string { return filepath.Join(out, "root-"+g) }
	// /bin/sh is dash, as on Debian (the link is made by dash's
	// maintainer script, which dpkg-deb -x does not run).
	if err := ensureSymlink(filepath.Join(root("base"), "bin", "sh"), "dash"); err != nil {
		return err
	}
	// The database listens beyond localhost (the pod's address), like
	// Harbor's image: its Dockerfile edits the same sample file initdb copies.
	sample := filepath.Join(root("db"), "usr/share/postgresql", HarborPostgresVersion, "postgresql.conf.sample")
	data, err := os.ReadFile(sample)
	if err != nil {
		return err
	}
	const listen = "#listen_addresses = 'localhost'"
	if !strings.Contains(string(data), listen) {
		return fmt.Errorf("%s: no %q line to change", sample, listen)
	}
	data = []byte(strings.Replace(string(data), listen, "listen_addresses = '*'", 1))
	if err := os.WriteFile(sample, data, 0o644); err != nil {
		return err
	}
	// No LLVM: PostgreSQL runs without its JIT (it disables JIT when the
	// provider cannot be loaded).
	lib := filepath.Join(root("db"), "usr/lib/postgresql", HarborPostgresVersion, "lib")
	jit, _ := filepath.Glob(filepath.Join(lib, "llvmjit*"))
	for _, p := range append(jit, filepath.Join(lib, "bitcode")) {
		if err := os.RemoveAll(p); err != nil {
			return err
		}
	}
	// nginx logs to the container's output, as Harbor's image does.
	for name, target := range map[string]string{"access.log": "/dev/stdout", "error.log": "/dev/stderr"} {
		if err := ensureSymlink(filepath.Join(root("nginx"), "var/log/nginx", name), target); err != nil {
			return err
		}
	}
	for _, g := range HarborDebianGroups {
		for _, d := range []string{"usr/share/doc", "usr/share/man", "usr/share/locale", "usr/share/lintian",
			"usr/share/info", "usr/share/bug", "usr/share/doc-base", "etc/init.d", "etc/logrotate.d", "lib/systemd", "usr/lib/systemd"} {
			if err := os.RemoveAll(filepath.Join(root(g.Name), d)); err != nil {
				return err
			}
		}
	}
	for _, g := range HarborDebianGroups {
		trees := []string{root("base")}
		if g.Name != "base" {
			trees = append(trees, root(g.Name))
		}
		if err := checkSharedLibraries(root(g.Name), trees); err != nil {
			return fmt.Errorf("Debian layer %s: %w", g.Name, err)
		}
	}
	for _, g := range HarborDebianGroups {
		if err := writeTreeTar(filepath.Join(out, harborDebTar(g.Name)), root(g.Name), time.Unix(0, 0)); err != nil {
			return err
		}
		if err := os.RemoveAll(root(g.Name)); err != nil {
			return err
		}
	}
	return nil
}

func ensureSymlink(link, target string) error {
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		return err
	}
	os.Remove(link)
	return os.Symlink(target, link)
}

// libDirs are where the dynamic loader of a Debian 12 amd64 system looks,
// plus PostgreSQL's private library folder (its modules link to each other
// through RUNPATH there).
var libDirs = []string{
	"lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64", "lib", "usr/lib",
	"usr/lib/x86_64-linux-gnu/gconv", // glibc's converters load each other by $ORIGIN
	"usr/lib/postgresql/" + HarborPostgresVersion + "/lib",
}

// checkSharedLibraries reads every ELF file below dir and reports every
// DT_NEEDED library that none of the trees provides in a library folder.
func checkSharedLibraries(dir string, trees []string) error {
	have := map[string]bool{}
	for _, t := range trees {
		for _, d := range libDirs {
			entries, _ := os.ReadDir(filepath.Join(t, d))
			for _, e := range entries {
				have[e.Name()] = true
			}
		}
	}
	missing := map[string][]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := elf.Open(p)
		if err != nil {
			return nil // not an ELF file
		}
		defer f.Close()
		libs, err := f.ImportedLibraries()
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		for _, l := range libs {
			if !have[l] {
				missing[l] = append(missing[l], rel)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(missing) == 0 {
		return nil
	}
	var lines []string
	for l, users := range missing {
		lines = append(lines, fmt.Sprintf("%s (needed by %s)", l, strings.Join(users[:min(3, len(users))], ", ")))
	}
	slices.Sort(lines)
	return errors.New("shared libraries missing: " + strings.Join(lines, "; "))
}
