package toolchain

import (
	_ "embed"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// The demo platform's own software, built here like the rest: the storage
// provisioner K-PaaS falls back to (Rancher's local-path-provisioner, a Go
// module), the busybox its helper pods run, and a MariaDB server from
// Debian 12's packages.
const (
	LocalPathProvisionerVersion = "v0.0.30"
	// BusyboxVersion and MariaDBVersion are those of Debian 12's packages
	// (busybox-static 1:1.35.0-4+deb12u1, mariadb-server-core
	// 1:10.11.*); the apt lists of the build host pin the exact revision.
	BusyboxVersion = "1.35.0"
	MariaDBVersion = "10.11"
)

// PlatformDebianGroups are the Debian layers of the demo platform's images.
// Output platform-deb-<name>.tar each.
var PlatformDebianGroups = []debGroup{
	{"base", DebianBasePackages},
	{"mariadb", []string{
		"mariadb-server-core", "mariadb-client-core", "mariadb-common", "mysql-common", "libmariadb3",
		"libaio1", "libbsd0", "libcap2", "libcrypt1", "libedit2", "libgcrypt20", "libgpg-error0",
		"liblz4-1", "liblzma5", "libmd0", "libncurses6", "libnuma1", "libssl3", "libstdc++6",
		"libsystemd0", "liburing2", "libzstd1", "zlib1g",
	}},
	// Statically linked: the image is this one file and its applet links.
	{"busybox", []string{"busybox-static"}},
}

func platformDebTar(group string) string { return "platform-deb-" + group + ".tar" }

func platformDebianComponent() *component {
	return debianLayers{
		Name: "platform-debian", Groups: PlatformDebianGroups, Tar: platformDebTar,
		Revision: "1", Fix: fixPlatformDebian,
	}.component()
}

// fixPlatformDebian does what the packages' maintainer scripts would:
// MariaDB's configuration link (update-alternatives) and busybox's applet
// links (busybox --install), read from the binary's own list.
func fixPlatformDebian(root func(group string) string) error {
	if err := ensureSymlink(filepath.Join(root("mariadb"), "etc/mysql/my.cnf"), "mariadb.cnf"); err != nil {
		return err
	}
	bb := filepath.Join(root("busybox"), "bin", "busybox")
	out, err := exec.Command(bb, "--list-full").Output()
	if err != nil {
		return fmt.Errorf("%s --list-full: %w", bb, err)
	}
	for _, applet := range strings.Fields(string(out)) {
		link := filepath.Join(root("busybox"), applet)
		if _, err := os.Lstat(link); err == nil {
			continue
		}
		rel, err := filepath.Rel(filepath.Dir(link), bb)
		if err != nil {
			return err
		}
		if err := ensureSymlink(link, rel); err != nil {
			return err
		}
	}
	return nil
}

func localPathProvisionerComponent() *component {
	return &component{
		Name: "local-path-provisioner", Version: LocalPathProvisionerVersion, Module: "local-path-provisioner",
		Outputs: []string{"local-path-provisioner"}, Cold: "1–3 min",
		Recipe: func(r *resolver) ([]command, error) {
			// As upstream's scripts/build: static, stripped, the version in main.VERSION.
			ld := "-s -w -X main.VERSION=" + LocalPathProvisionerVersion
			return []command{goBuild(static, "", ld, "github.com/rancher/local-path-provisioner")}, nil
		},
	}
}

//go:embed platform/mariadb-entrypoint.sh
var mariadbEntrypoint string

//go:embed platform/mariadb.cnf
var mariadbConfig string

// MariaDB runs as Debian's mysql user (uid and gid 999, as in the official
// image), so a volume prepared for one suits the other.
const mariadbUID = 999

func platformImageSpecs() []imageSpec {
	deb := func(groups ...string) []imageFile {
		var l []imageFile
		for _, g := range groups {
			l = append(l, imageFile{Component: "platform-debian", Name: platformDebTar(g)})
		}
		return l
	}
	debian := func(pkg string) map[string]string {
		return map[string]string{"org.opencontainers.image.source": "https://sources.debian.org/src/" + pkg + "/"}
	}
	return []imageSpec{
		{
			// Upstream's image adds the binary to Alpine; the provisioner
			// execs nothing itself (its helper pods do the file work).
			Ref: "docker.io/rancher/local-path-provisioner:" + LocalPathProvisionerVersion, Version: LocalPathProvisionerVersion,
			Labels: map[string]string{"org.opencontainers.image.source": "https://github.com/rancher/local-path-provisioner"},
			Files:  []imageFile{{"local-path-provisioner", "local-path-provisioner", "/usr/bin/local-path-provisioner"}},
			Cmd:    []string{"local-path-provisioner"},
		},
		{
			Ref: "docker.io/library/busybox:" + BusyboxVersion, Version: BusyboxVersion, Labels: debian("busybox"),
			TarLayers: deb("busybox"),
			Cmd:       []string{"sh"},
		},
		{
			Ref: "docker.io/kpaas/mariadb:" + MariaDBVersion, Version: MariaDBVersion, Labels: debian("mariadb"),
			TarLayers: deb("base", "mariadb"),
			Users:     []imageUser{{Name: "mysql", UID: mariadbUID, GID: mariadbUID, Home: "/var/lib/mysql"}},
			Dirs: []imageDir{
				{Path: "/var/lib/mysql", Mode: 0o755, UID: mariadbUID, GID: mariadbUID},
			},
			Texts: []imageText{
				{Path: "/usr/local/bin/docker-entrypoint.sh", Mode: 0o755, Data: mariadbEntrypoint},
				{Path: "/etc/mysql/conf.d/kpaas.cnf", Mode: 0o644, Data: mariadbConfig},
			},
			User:       "mysql",
			Entrypoint: []string{"/usr/local/bin/docker-entrypoint.sh"},
			Cmd:        []string{"mariadbd"},
		},
	}
}
