package toolchain

import (
	"archive/tar"
	"bufio"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// NetToolsPackages are the Debian packages of the netfilter userspace that
// kube-proxy (iptables mode) and kube-router exec at run time: iptables,
// ipset and conntrack with their libraries and glibc. They cannot be built
// from Go modules; they come from the build host's Debian 12 archive (apt
// lists must be current: apt-get update). The resolved package versions are
// part of the cache key.
var NetToolsPackages = []string{
	"iptables", "libip4tc2", "libip6tc2", "libxtables12", "libnftnl11", "libmnl0",
	"libnetfilter-conntrack3", "libnfnetlink0", "ipset", "libipset13", "conntrack",
	"netbase", "libc6", "libgcc-s1",
}

// NetToolsTar is the output of the nettools component: an uncompressed,
// deterministic tar of the extracted packages, used as an image layer.
const NetToolsTar = "nettools.tar"

func netToolsComponent() *component {
	return &component{
		Name: "nettools", Version: "debian", Outputs: []string{NetToolsTar},
		Cold: "seconds (apt download)",
		Recipe: func(r *resolver) ([]command, error) {
			pinned, err := r.debianVersions(NetToolsPackages)
			if err != nil {
				return nil, err
			}
			return []command{
				{Prog: "apt-get", Args: append([]string{"download", "-q"}, pinned...)},
				{Prog: "sh", Args: []string{"-ec", `for f in *.deb; do dpkg-deb -x "$f" root; done; rm -f *.deb`}},
			}, nil
		},
		Finish: finishNetTools,
	}
}

// debianVersions pins each package to the candidate version apt would
// install, as name=version.
func (r *resolver) debianVersions(pkgs []string) ([]string, error) {
	out, err := r.b.output(r.ctx, "", "apt-cache", append([]string{"show", "--no-all-versions"}, pkgs...)...)
	if err != nil {
		return nil, fmt.Errorf("resolving Debian packages (apt-get update first): %w", err)
	}
	versions := map[string]string{}
	var name string
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ": "); ok {
			switch k {
			case "Package":
				name = v
			case "Version":
				versions[name] = v
			}
		}
	}
	var pinned []string
	for _, p := range pkgs {
		v, ok := versions[p]
		if !ok {
			return nil, fmt.Errorf("Debian package %s: no candidate version", p)
		}
		pinned = append(pinned, p+"="+v)
	}
	return pinned, nil
}

// finishNetTools selects the nft backend of iptables (Debian 12's default,
// what update-alternatives would do; it must match the host), drops
// documentation, and writes the tree as a deterministic tar.
func finishNetTools(out string) error {
	root := filepath.Join(out, "root")
	sbin := filepath.Join(root, "usr", "sbin")
	for _, n := range []string{"iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore"} {
		link := filepath.Join(sbin, n)
		os.Remove(link)
		if err := os.Symlink(strings.Replace(n, "tables", "tables-nft", 1), link); err != nil {
			return err
		}
	}
	for _, d := range []string{"usr/share/doc", "usr/share/man", "usr/share/locale", "usr/share/lintian", "usr/share/info", "usr/share/bug"} {
		if err := os.RemoveAll(filepath.Join(root, d)); err != nil {
			return err
		}
	}
	if err := writeTreeTar(filepath.Join(out, NetToolsTar), root, time.Unix(0, 0)); err != nil {
		return err
	}
	return os.RemoveAll(root)
}

// writeTreeTar writes the tree below root as a tar with sorted entries,
// owner 0:0, the fixed mtime and the files' own modes; symlinks stay links.
func writeTreeTar(dest, root string, mtime time.Time) (err error) {
	var paths []string
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != root {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	slices.Sort(paths)
	f, err := os.Create(dest)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	tw := tar.NewWriter(f)
	for _, p := range paths {
		rel, _ := filepath.Rel(root, p)
		st, err := os.Lstat(p)
		if err != nil {
			return err
		}
		mode := int64(st.Mode().Perm())
		if st.Mode()&os.ModeSticky != 0 {
			mode |= 0o1000
		}
		switch {
		case st.IsDir():
			err = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: rel + "/", Mode: mode, ModTime: mtime})
		case st.Mode()&os.ModeSymlink != 0:
			target, lerr := os.Readlink(p)
			if lerr != nil {
				return lerr
			}
			err = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: rel, Linkname: target, Mode: 0o777, ModTime: mtime})
		case st.Mode().IsRegular():
			err = addFile(tw, p, rel, mode, mtime)
		default:
			err = fmt.Errorf("%s: unsupported file type %s", p, st.Mode().Type())
		}
		if err != nil {
			return err
		}
	}
	return tw.Close()
}
