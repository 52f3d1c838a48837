package toolchain

import (
	"archive/tar"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// Harbor's images, laid out as Harbor's make/photon Dockerfiles lay out
// theirs, so that the official chart (harbor-helm 1.19.1) runs them with
// values only: the same binaries, scripts, users (harbor 10000, postgres
// and redis 999, nginx 10000), paths and entrypoints. They are tagged with
// the true version (v2.15.2; chart 1.19.1 defaults to v2.15.1, so values
// set each image's tag, see docs/harbor.md). The base userland, PostgreSQL
// 15, Redis 7 and nginx come from Debian 12 instead of Photon OS.
//
// Harbor's web portal is an Angular application whose npm build is
// optional (harborportal.go); the stand-in, always built, is an image
// under its own name that serves a page saying so (the API, the registry
// and docker login all work without the portal).
const (
	harborRepo = "docker.io/goharbor/"
	// HarborPortalStandIn is the portal stand-in's reference.
	HarborPortalStandIn = "kpaas.local/goharbor/harbor-portal-standin:" + HarborVersion
)

// harborLabels record the sources' provenance in every Harbor image (its
// config labels and the layout's index annotations).
func harborLabels(source, revision string) map[string]string {
	return map[string]string{
		"org.opencontainers.image.source":   source,
		"org.opencontainers.image.revision": revision,
	}
}

// harborImageSpecs are Harbor's images; with portal, also the portal
// built from its sources (the harbor-portal component).
func harborImageSpecs(portal bool) []imageSpec {
	harbor := harborLabels("https://github.com/goharbor/harbor", HarborCommit)
	const harborUID = 10000
	harborUser := []imageUser{{Name: "harbor", UID: harborUID, GID: harborUID, Home: "/home/harbor"}}
	deb := func(groups ...string) []imageFile {
		var l []imageFile
		for _, g := range groups {
			l = append(l, imageFile{Component: "harbor-debian", Name: harborDebTar(g)})
		}
		return l
	}
	support := func(src, dest string, mode int64) imageExtract {
		return imageExtract{Component: "harbor", Tar: HarborSupportTar, Src: src, Dest: dest, Mode: mode}
	}
	certs := imageDir{Path: "/etc/pki/tls/certs", Mode: 0o755, UID: harborUID, GID: harborUID}
	nginxUser := []imageUser{{Name: "nginx", UID: harborUID, GID: harborUID, Home: "/home/nginx"}}
	nginxDirs := []imageDir{
		{Path: "/home/nginx", Mode: 0o755, UID: harborUID, GID: harborUID},
		{Path: "/var/cache/nginx", Mode: 0o755, UID: harborUID, GID: harborUID},
		{Path: "/var/lib/nginx", Mode: 0o755, UID: harborUID, GID: harborUID},
	}
	nginxCmd := []string{"nginx", "-g", "daemon off;"}
	pgBin := "/usr/lib/postgresql/" + HarborPostgresVersion + "/bin"
	specs := []imageSpec{
		{
			Ref: harborRepo + "harbor-core:" + HarborVersion, Version: HarborVersion, Labels: harbor,
			TarLayers: deb("base"),
			Files:     []imageFile{{"harbor", HarborCore, "/harbor/harbor_core"}},
			Dirs:      []imageDir{{Path: "/harbor", Mode: 0o755, UID: harborUID, GID: harborUID}, certs},
			Extract: []imageExtract{
				support("make/photon/common/install_cert.sh", "/harbor/install_cert.sh", 0o755),
				support("make/photon/core/entrypoint.sh", "/harbor/entrypoint.sh", 0o755),
				support("src/core/views", "/harbor/views", 0),
				support("make/migrations", "/harbor/migrations", 0),
				support("icons", "/harbor/icons", 0),
			},
			Users: harborUser, User: "harbor", WorkingDir: "/harbor/",
			Entrypoint: []string{"/harbor/entrypoint.sh"},
		},
		{
			Ref: harborRepo + "harbor-jobservice:" + HarborVersion, Version: HarborVersion, Labels: harbor,
			TarLayers: deb("base"),
			Files:     []imageFile{{"harbor", HarborJobservice, "/harbor/harbor_jobservice"}},
			Dirs: []imageDir{{Path: "/harbor", Mode: 0o755, UID: harborUID, GID: harborUID}, certs,
				{Path: "/var/log/jobs", Mode: 0o755, UID: harborUID, GID: harborUID}},
			Extract: []imageExtract{
				support("make/photon/common/install_cert.sh", "/harbor/install_cert.sh", 0o755),
				support("make/photon/jobservice/entrypoint.sh", "/harbor/entrypoint.sh", 0o755),
			},
			Users: harborUser, User: "harbor", WorkingDir: "/harbor/",
			Entrypoint: []string{"/harbor/entrypoint.sh"},
		},
		{
			Ref: harborRepo + "harbor-registryctl:" + HarborVersion, Version: HarborVersion, Labels: harbor,
			TarLayers: deb("base"),
			Files: []imageFile{
				{"harbor", HarborRegistryctl, "/home/harbor/harbor_registryctl"},
				{"harbor-registry", HarborRegistry, "/usr/bin/registry_DO_NOT_USE_GC"},
			},
			Dirs: []imageDir{{Path: "/home/harbor", Mode: 0o755, UID: harborUID, GID: harborUID}, certs,
				{Path: "/etc/registry", Mode: 0o755}, {Path: "/var/lib/registry", Mode: 0o755, UID: harborUID, GID: harborUID}},
			Extract: []imageExtract{
				support("make/photon/common/install_cert.sh", "/home/harbor/install_cert.sh", 0o755),
				support("make/photon/registryctl/start.sh", "/home/harbor/start.sh", 0o755),
			},
			Users: harborUser, User: "harbor",
			Entrypoint: []string{"/home/harbor/start.sh"},
		},
		{
			Ref: harborRepo + "registry-photon:" + HarborVersion, Version: HarborRegistryVersion,
			Labels:    harborLabels("https://github.com/goharbor/distribution", HarborRegistryCommit),
			TarLayers: deb("base"),
			Files:     []imageFile{{"harbor-registry", HarborRegistry, "/usr/bin/registry_DO_NOT_USE_GC"}},
			Dirs: []imageDir{{Path: "/home/harbor", Mode: 0o755, UID: harborUID, GID: harborUID}, certs,
				{Path: "/etc/registry", Mode: 0o755}, {Path: "/storage", Mode: 0o755, UID: harborUID, GID: harborUID}},
			Extract: []imageExtract{
				support("make/photon/common/install_cert.sh", "/home/harbor/install_cert.sh", 0o755),
				support("make/photon/registry/entrypoint.sh", "/home/harbor/entrypoint.sh", 0o755),
			},
			Users: harborUser, User: "harbor",
			Entrypoint: []string{"/home/harbor/entrypoint.sh"},
		},
		{
			// Harbor's scripts with Debian's PostgreSQL 15: the entrypoint's
			// arguments say "no older version to upgrade from, run 15", so
			// the data lives in $PGDATA/pg15 (Harbor's own image runs 18 and
			// upgrades a pg15 folder it finds).
			Ref: harborRepo + "harbor-db:" + HarborVersion, Version: HarborVersion, Labels: harbor,
			TarLayers: deb("base", "db"),
			Dirs: []imageDir{
				{Path: "/var/lib/postgresql", Mode: 0o755, UID: 999, GID: 999},
				{Path: "/var/lib/postgresql/data", Mode: 0o777, UID: 999, GID: 999},
				{Path: "/var/run/postgresql", Mode: 0o2777, UID: 999, GID: 999},
				{Path: "/docker-entrypoint-initdb.d", Mode: 0o755, UID: 999, GID: 999},
			},
			Extract: []imageExtract{
				support("make/photon/db/docker-entrypoint.sh", "/docker-entrypoint.sh", 0o755),
				support("make/photon/db/initdb.sh", "/initdb.sh", 0o755),
				support("make/photon/db/upgrade.sh", "/upgrade.sh", 0o755),
				support("make/photon/db/initial-registry.sql", "/docker-entrypoint-initdb.d/initial-registry.sql", 0o644),
			},
			// Not Harbor's health check: see harborDBHealthcheck; Harbor's
			// entrypoint behind ours: see harborDBEntrypoint.
			Texts: []imageText{
				{Path: "/docker-healthcheck.sh", Mode: 0o755, Data: harborDBHealthcheck},
				{Path: harborDBEntrypointPath, Mode: 0o755, Data: harborDBEntrypoint},
			},
			Users: []imageUser{{Name: "postgres", UID: 999, GID: 999, Home: "/var/lib/postgresql"}}, User: "postgres",
			Env:        []string{"PATH=" + pgBin + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "PGDATA=/var/lib/postgresql/data"},
			Entrypoint: []string{harborDBEntrypointPath, "", HarborPostgresVersion},
		},
		{
			Ref: harborRepo + "redis-photon:" + HarborVersion, Version: HarborVersion, Labels: harbor,
			TarLayers: deb("base", "redis"),
			Dirs:      []imageDir{{Path: "/var/lib/redis", Mode: 0o755, UID: 999, GID: 999}},
			Extract:   []imageExtract{support("make/photon/valkey/redis.conf", "/etc/redis.conf", 0o644)},
			Users:     []imageUser{{Name: "redis", UID: 999, GID: 999, Home: "/var/lib/redis"}}, User: "redis",
			WorkingDir: "/var/lib/redis",
			Cmd:        []string{"redis-server", "/etc/redis.conf"},
		},
		{
			Ref: harborRepo + "nginx-photon:" + HarborVersion, Version: HarborVersion, Labels: harbor,
			TarLayers: deb("base", "nginx"),
			Dirs:      nginxDirs, Users: nginxUser, User: "nginx", Cmd: nginxCmd,
		},
		{
			Ref: HarborPortalStandIn, Version: HarborVersion, Labels: harbor,
			TarLayers: deb("base", "nginx"),
			Dirs:      nginxDirs, Users: nginxUser, User: "nginx", Cmd: nginxCmd,
			Texts: []imageText{{Path: "/usr/share/nginx/html/index.html", Mode: 0o644, Data: portalStandInPage}},
		},
	}
	if portal {
		// make/photon/portal/Dockerfile: nginx serving the build's web root.
		specs = append(specs, imageSpec{
			Ref: HarborPortalImage, Version: HarborVersion, Labels: harbor,
			TarLayers: deb("base", "nginx"),
			Dirs:      nginxDirs, Users: nginxUser, User: "nginx", Cmd: nginxCmd,
			Extract: []imageExtract{{Component: "harbor-portal", Tar: HarborPortalHTML, Src: "html", Dest: "/usr/share/nginx/html"}},
		})
	}
	return specs
}

// harborDBHealthcheck is the database image's /docker-healthcheck.sh,
// which the chart's liveness and readiness probes run. Harbor's own
// (make/photon/db/docker-healthcheck.sh) pipes echo into psql from bash:
// when a probe times out the kubelet kills bash alone, and psql and the
// echo subshell are orphaned to the container's PID 1, PostgreSQL's
// postmaster, which takes their exit (2, 141) for a crashed backend and
// restarts every process (crash recovery; during core's schema
// migration that leaves the schema dirty, and core never starts). Seen
// under QEMU on a one-vCPU worker with timeouts of 1 s and of 10 s. This
// one makes the same query with the same connection (TCP to localhost,
// as user and database the chart's environment names), but bash execs
// psql: the probe is one process, which leaves no orphan when killed.
// psql exits 0 only when the query ran.
const harborDBHealthcheck = `#!/bin/bash
# kpaas: Harbor's docker-healthcheck.sh with psql exec'd, so that a probe
# killed on its timeout leaves no child for the postmaster (PID 1) to reap.
set -e
user="${POSTGRES_USER:-postgres}"
db="${POSTGRES_DB:-$POSTGRES_USER}"
export PGPASSWORD="${POSTGRES_PASSWORD:-}"
exec psql --host localhost --username "$user" --dbname "$db" --quiet --no-align --tuples-only --command 'SELECT 1'
`

// harborDBEntrypoint is the database image's entrypoint, in front of
// Harbor's (make/photon/db/docker-entrypoint.sh, same arguments). Harbor's
// initialises a new database in place, in $PGDATA/pg15, and takes a folder
// holding PG_VERSION for a finished one; initdb writes that file among its
// first. An initialisation cut short (a liveness probe's kill on a slow
// node, a power cut) therefore leaves a half-made database that Harbor's
// entrypoint starts as if it were whole, and core never migrates it. This
// one runs Harbor's own initPG (initdb.sh) in a sibling folder and renames
// it into place once complete: an interrupted initialisation starts again
// from nothing. Then Harbor's entrypoint runs, finds the database made and
// starts PostgreSQL; upgrades from an older version's folder stay Harbor's.
const harborDBEntrypoint = `#!/bin/bash
# kpaas: initialise the database out of place, then run Harbor's entrypoint.
set -e
old="$1"
new="$PGDATA/pg$2"
if [ ! -s "$new/PG_VERSION" ] && { [ -z "$old" ] || [ ! -s "$PGDATA/pg$old/PG_VERSION" ]; }; then
	source /initdb.sh
	if [ -e "$new.init" ]; then
		echo "kpaas: an earlier initialisation of $new was interrupted: starting it again"
		rm -rf "$new.init"
	fi
	echo "kpaas: init DB, DB version:$2, in $new.init (renamed to $new once complete)"
	initPG "$new.init" true
	mv "$new.init" "$new"
fi
exec /docker-entrypoint.sh "$@"
`

const harborDBEntrypointPath = "/kpaas-db-entrypoint.sh"

const portalStandInPage = `<!doctype html>
<html><head><meta charset="utf-8"><title>Harbor</title></head>
<body>
<h1>Harbor ` + HarborVersion + `</h1>
<p>This Harbor was built offline from its sources without its web portal
(an Angular application, whose npm build the appliance's toolchain makes
only when asked: <code>kpaas toolchain build --harbor-portal</code>).</p>
<p>Everything else works: the registry (<code>docker login</code>,
<code>docker push</code>, <code>docker pull</code> against this host), and the
REST API below <a href="/api/v2.0/ping">/api/v2.0/</a>, for example
<code>curl -u admin:PASSWORD https://HOST/api/v2.0/projects</code>.</p>
</body></html>
`

// baseUsers are the accounts of the shared base layer.
var baseUsers = []imageUser{
	{Name: "root", UID: 0, GID: 0, Home: "/root"},
	{Name: "nobody", UID: 65534, GID: 65534, Home: "/nonexistent"},
	{Name: "nonroot", UID: 65532, GID: 65532, Home: "/home/nonroot"},
}

// topFiles are the entries the spec adds besides its binaries: folders with
// owners first, then /etc/passwd and /etc/group, extracted and literal files.
func (s imageSpec) topFiles(dirs map[string]string) ([]tarEntry, error) {
	var out []tarEntry
	for _, d := range s.Dirs {
		out = append(out, tarEntry{Name: d.Path, Mode: d.Mode, Dir: true, UID: d.UID, GID: d.GID})
	}
	if len(s.Users) > 0 {
		var passwd, group strings.Builder
		for _, u := range slices.Concat(baseUsers, s.Users) {
			shell := "/sbin/nologin"
			if u.UID != 0 && u.UID < 65532 {
				shell = "/bin/sh"
			}
			fmt.Fprintf(&passwd, "%s:x:%d:%d:%s:%s:%s\n", u.Name, u.UID, u.GID, u.Name, u.Home, shell)
			fmt.Fprintf(&group, "%s:x:%d:\n", u.Name, u.GID)
		}
		out = append(out,
			tarEntry{Name: "/etc/passwd", Mode: 0o644, Data: []byte(passwd.String())},
			tarEntry{Name: "/etc/group", Mode: 0o644, Data: []byte(group.String())})
	}
	for _, x := range s.Extract {
		entries, err := extractEntries(filepath.Join(dirs[x.Component], x.Tar), x)
		if err != nil {
			return nil, fmt.Errorf("%s from %s: %w", x.Src, x.Tar, err)
		}
		out = append(out, entries...)
	}
	for _, t := range s.Texts {
		out = append(out, tarEntry{Name: t.Path, Mode: t.Mode, Data: []byte(t.Data)})
	}
	return out, nil
}

// extractEntries reads the file or folder x.Src out of the tar at path,
// renamed below x.Dest.
func extractEntries(tarPath string, x imageExtract) ([]tarEntry, error) {
	f, err := os.Open(tarPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []tarEntry
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		name := strings.TrimSuffix(h.Name, "/")
		rel, ok := strings.CutPrefix(name, x.Src)
		if !ok || (rel != "" && !strings.HasPrefix(rel, "/")) {
			continue
		}
		dest := path.Join(x.Dest, rel)
		mode := h.Mode & 0o7777
		switch h.Typeflag {
		case tar.TypeDir:
			out = append(out, tarEntry{Name: dest, Mode: mode, Dir: true})
		case tar.TypeSymlink:
			out = append(out, tarEntry{Name: dest, Link: h.Linkname})
		case tar.TypeReg:
			data, err := io.ReadAll(tr)
			if err != nil {
				return nil, err
			}
			if x.Mode != 0 {
				mode = x.Mode
			}
			out = append(out, tarEntry{Name: dest, Mode: mode, Data: data})
		default:
			return nil, fmt.Errorf("%s: unsupported entry type %c", h.Name, h.Typeflag)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("nothing named %s", x.Src)
	}
	return out, nil
}
