package toolchain

import (
	"fmt"
	"go/version"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// MinGoVersion is the oldest go command that builds every component (the
// highest go line of the modules built: Harbor's src/go.mod says 1.26.4).
const MinGoVersion = "go1.26.4"

// host is what the prerequisite checks look at. Tests replace it.
type host struct {
	lookPath func(string) (string, error)
	stat     func(string) (fs.FileInfo, error)
	glob     func(string) ([]string, error)
	// nodeVersion is what `node --version` prints ("v20.20.2"), or ""
	// when there is no node.
	nodeVersion func() string
}

func realHost() host {
	return host{lookPath: exec.LookPath, stat: os.Stat, glob: filepath.Glob, nodeVersion: func() string {
		out, err := exec.Command("node", "--version").Output()
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(out))
	}}
}

// prerequisite is one thing of the build host that a component needs and
// the go command does not bring: a C tool, a static library, apt's lists.
type prerequisite struct {
	What    string // what is missing, as the user would look for it
	For     string // which components need it
	Package string // the Debian package that provides it
	Hint    string // what to do instead of installing a package
	present func(h host) bool
}

func tool(name string) func(host) bool {
	return func(h host) bool { _, err := h.lookPath(name); return err == nil }
}

func file(path string) func(host) bool {
	return func(h host) bool { _, err := h.stat(path); return err == nil }
}

// libDir is where Debian puts amd64 libraries.
const libDir = "/usr/lib/x86_64-linux-gnu"

// prerequisites is the literal list of what the build host must have, so
// that a missing piece stops the build before anything is compiled, not
// after Kubernetes' half hour.
func prerequisites() []prerequisite {
	return []prerequisite{
		{What: "gcc", For: "runc (cgo) and pause", Package: "gcc", present: tool("gcc")},
		{What: "strip", For: "pause", Package: "binutils", present: tool("strip")},
		{What: libDir + "/libc.a", For: "the static runc and pause", Package: "libc6-dev", present: file(libDir + "/libc.a")},
		{What: "pkg-config", For: "runc's libseccomp", Package: "pkg-config", present: tool("pkg-config")},
		{What: libDir + "/libseccomp.a", For: "runc (static seccomp)", Package: "libseccomp-dev", present: file(libDir + "/libseccomp.a")},
		{What: libDir + "/pkgconfig/libseccomp.pc", For: "runc (static seccomp)", Package: "libseccomp-dev", present: file(libDir + "/pkgconfig/libseccomp.pc")},
		{What: "apt-get", For: "the netfilter tools layer", Package: "apt", present: tool("apt-get")},
		{What: "dpkg-deb", For: "the netfilter tools layer", Package: "dpkg", present: tool("dpkg-deb")},
		{What: "apt package lists", For: "the netfilter tools layer", Hint: "run apt-get update (as root)", present: func(h host) bool {
			m, err := h.glob("/var/lib/apt/lists/*_Packages*") // plain, or .lz4/.gz when apt keeps them compressed
			return err == nil && len(m) > 0
		}},
	}
}

// PrerequisiteError lists everything the build host lacks, with the Debian
// packages to install. Nothing was built when it is returned.
type PrerequisiteError struct {
	Missing  []string // one line per missing piece
	Packages []string // Debian packages to install, sorted, once each
	Hints    []string // other steps (apt-get update)
}

func (e *PrerequisiteError) Error() string {
	var b strings.Builder
	b.WriteString("the build host lacks what the toolchain needs (nothing was built):")
	for _, m := range e.Missing {
		b.WriteString("\n  " + m)
	}
	if len(e.Packages) > 0 {
		fmt.Fprintf(&b, "\ninstall them: apt-get install %s (or run hack/install-deps.sh as root)", strings.Join(e.Packages, " "))
	}
	for _, h := range e.Hints {
		b.WriteString("\nthen: " + h)
	}
	return b.String()
}

// portalPrerequisites are what Harbor's portal build needs besides.
func portalPrerequisites() []prerequisite {
	const why = "Harbor's portal"
	return []prerequisite{
		{What: "npm", For: why, Package: "npm", present: tool("npm")},
		{What: "Node.js " + MinNodeVersion + " or newer", For: why + " (Angular 21)",
			Hint:    "install Node.js " + MinNodeVersion + " or newer (Debian 12's nodejs is 18; Debian 13's is 20.19)",
			present: func(h host) bool { return nodeAtLeast(h.nodeVersion(), MinNodeVersion) }},
	}
}

// nodeAtLeast compares "vMAJOR.MINOR.PATCH" versions; "" is never enough.
func nodeAtLeast(have, want string) bool {
	parse := func(v string) ([3]int, bool) {
		var n [3]int
		parts := strings.SplitN(strings.TrimPrefix(v, "v"), ".", 3)
		if len(parts) != 3 {
			return n, false
		}
		for i, p := range parts {
			x, err := strconv.Atoi(strings.SplitN(p, "-", 2)[0])
			if err != nil {
				return n, false
			}
			n[i] = x
		}
		return n, true
	}
	h, ok1 := parse(have)
	w, ok2 := parse(want)
	return ok1 && ok2 && slices.Compare(h[:], w[:]) >= 0
}

// checkPrerequisites reports every missing prerequisite at once (the
// portal's too when it is built), and a go command older than
// MinGoVersion.
func checkPrerequisites(h host, goVersion string, portal bool) error {
	e := &PrerequisiteError{}
	seen := map[string]bool{}
	list := prerequisites()
	if portal {
		list = append(list, portalPrerequisites()...)
	}
	for _, p := range list {
		if p.present(h) {
			continue
		}
		line := fmt.Sprintf("%s (for %s)", p.What, p.For)
		if p.Package != "" {
			line += ": Debian package " + p.Package
			if !seen[p.Package] {
				seen[p.Package] = true
				e.Packages = append(e.Packages, p.Package)
			}
		} else {
			line += ": " + p.Hint
			e.Hints = append(e.Hints, p.Hint)
		}
		e.Missing = append(e.Missing, line)
	}
	sort.Strings(e.Packages)
	if goVersion != "" && version.Compare(goVersion, MinGoVersion) < 0 {
		e.Missing = append(e.Missing, fmt.Sprintf("the go command is %s, the toolchain needs %s or newer", goVersion, MinGoVersion))
	}
	if len(e.Missing) == 0 {
		return nil
	}
	return e
}
