package toolchain

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// HarborDebianGroups are the Debian layers of Harbor's images (see
// debianLayers): base userland, then PostgreSQL, Redis and nginx. Output
// harbor-deb-<name>.tar each.
var HarborDebianGroups = []debGroup{
	{"base", DebianBasePackages},
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
	return debianLayers{
		Name: "harbor-debian", Groups: HarborDebianGroups, Tar: harborDebTar,
		// fixHarborDebian: listen_addresses, no JIT, nginx logs to
		// stdout/stderr; and the shared fix-ups of debianLayers.
		Revision:     "1",
		MorePackages: []string{i18nPackage},
		MoreScript:   fmt.Sprintf("dpkg-deb -x %s_*.deb i18n\nmkdir -p root-db/usr/lib/locale\n", i18nPackage),
		MoreCommands: []command{
			{Prog: "localedef", Args: []string{"-i", "en_US", "-f", "UTF-8", "$OUT/root-db/usr/lib/locale/en_US.UTF-8"},
				Env: []string{"I18NPATH=$OUT/i18n/usr/share/i18n"}},
			{Prog: "sh", Args: []string{"-ec", "rm -rf i18n *.deb"}},
		},
		Fix: fixHarborDebian,
	}.component()
}

// fixHarborDebian adjusts the trees the way Harbor's Photon Dockerfiles
// adjust theirs.
func fixHarborDebian(root func(group string) string) error {
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
	return nil
}
