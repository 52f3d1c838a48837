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

// Containers that need a shell or a C program (Harbor's database, cache and
// front proxy; the demo platform's MariaDB and busybox) get it from the
// build host's Debian 12 archive, like the netfilter tools: a component
// downloads pinned packages and writes one deterministic tar per group,
// used as image layers. Each group's packages are the Depends closure of
// its roots minus what the base group has and minus what no container runs
// (maintainer scripts' helpers, perl, documentation). The build checks that
// every shared library any ELF file of a group needs is in the group or in
// base.
type debGroup struct {
	Name     string
	Packages []string
}

// DebianBasePackages are the userland every Debian-based image starts
// from: glibc, a POSIX shell (dash, also /bin/sh), bash and the core
// utilities.
var DebianBasePackages = []string{
	"libc6", "libgcc-s1", "dash", "bash", "coreutils", "debianutils", "findutils", "grep", "sed",
	"libacl1", "libattr1", "libgmp10", "libpcre2-8-0", "libselinux1", "libtinfo6", "tzdata",
}

// debianLayers describes one such component.
type debianLayers struct {
	Name string
	// Groups[0] is the base group ("base"): the other groups' libraries
	// may come from it.
	Groups []debGroup
	// Tar names a group's output.
	Tar func(group string) string
	// Revision is the component's (see component.Revision): change it
	// when Fix or the shared fix-ups change.
	Revision string
	// MorePackages are downloaded too, for MoreScript (appended to the
	// extraction script) and MoreCommands (run after it).
	MorePackages []string
	MoreScript   string
	MoreCommands []command
	// Fix adjusts the extracted trees (root(group) is a group's folder)
	// before the shared fix-ups and the library check.
	Fix func(root func(group string) string) error
}

func (d debianLayers) component() *component {
	var outs []string
	for _, g := range d.Groups {
		outs = append(outs, d.Tar(g.Name))
	}
	return &component{
		Name: d.Name, Version: "debian", Outputs: outs,
		Cold: "under a minute (apt download)", Revision: d.Revision,
		Recipe: func(r *resolver) ([]command, error) {
			all := slices.Clone(d.MorePackages)
			for _, g := range d.Groups {
				all = append(all, g.Packages...)
			}
			slices.Sort(all)
			all = slices.Compact(all)
			pinned, err := r.debianVersions(all)
			if err != nil {
				return nil, err
			}
			var script strings.Builder
			for _, g := range d.Groups {
				fmt.Fprintf(&script, "mkdir -p root-%s\nfor p in %s; do dpkg-deb -x \"${p}\"_*.deb root-%s; done\n",
					g.Name, strings.Join(g.Packages, " "), g.Name)
			}
			script.WriteString(d.MoreScript)
			cmds := []command{
				{Prog: "apt-get", Args: append([]string{"download", "-q"}, pinned...)},
				{Prog: "sh", Args: []string{"-ec", script.String()}},
			}
			if len(d.MoreCommands) == 0 {
				return append(cmds, command{Prog: "sh", Args: []string{"-ec", "rm -f *.deb"}}), nil
			}
			return append(cmds, d.MoreCommands...), nil
		},
		Finish: d.finish,
	}
}

// finish fixes the trees up, checks every group's shared libraries, and
// writes each group as a deterministic tar.
func (d debianLayers) finish(out string) error {
	root := func(g string) string { return filepath.Join(out, "root-"+g) }
	base := d.Groups[0].Name
	// /bin/sh is dash, as on Debian (the link is made by dash's
	// maintainer script, which dpkg-deb -x does not run).
	if slices.Contains(d.Groups[0].Packages, "dash") {
		if err := ensureSymlink(filepath.Join(root(base), "bin", "sh"), "dash"); err != nil {
			return err
		}
	}
	if d.Fix != nil {
		if err := d.Fix(root); err != nil {
			return err
		}
	}
	for _, g := range d.Groups {
		for _, dir := range []string{"usr/share/doc", "usr/share/man", "usr/share/locale", "usr/share/lintian",
			"usr/share/info", "usr/share/bug", "usr/share/doc-base", "etc/init.d", "etc/logrotate.d", "lib/systemd", "usr/lib/systemd"} {
			if err := os.RemoveAll(filepath.Join(root(g.Name), dir)); err != nil {
				return err
			}
		}
	}
	for _, g := range d.Groups {
		trees := []string{root(base)}
		if g.Name != base {
			trees = append(trees, root(g.Name))
		}
		if err := checkSharedLibraries(root(g.Name), trees); err != nil {
			return fmt.Errorf("Debian layer %s: %w", g.Name, err)
		}
	}
	for _, g := range d.Groups {
		if err := writeTreeTar(filepath.Join(out, d.Tar(g.Name)), root(g.Name), time.Unix(0, 0)); err != nil {
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
