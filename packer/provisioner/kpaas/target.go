package kpaas

import (
	"bufio"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"kpaas.dev/appliance/internal/progress"
)

// NodeCommands are the commands a K-PaaS node runs (the agent, kubeadm,
// kubelet and containerd), with the Debian package of each. A machine
// without them cannot become a node: the target check names them before
// anything is uploaded.
var NodeCommands = map[string]string{
	"systemctl":  "systemd",
	"networkctl": "systemd (systemd-networkd)",
	"modprobe":   "kmod",
	"mount":      "mount",
	"umount":     "mount",
	"swapoff":    "mount",
	"nsenter":    "util-linux",
	"ip":         "iproute2",
	"sysctl":     "procps",
	"iptables":   "iptables",
	"conntrack":  "conntrack",
	"socat":      "socat",
	"ethtool":    "ethtool",
	"sha256sum":  "coreutils",
	"install":    "coreutils",
}

// checkScript prints facts about the machine, one key=value a line, for
// Target; also what a machine provisioned before already holds: the blobs
// of its bundle (name and size) and the sha256 of each node file target
// that exists (the next upload leaves out what is there).
func checkScript(mediaDir string, targets []string) string {
	var cmds []string
	for c := range NodeCommands {
		cmds = append(cmds, c)
	}
	sort.Strings(cmds)
	return fmt.Sprintf(`# packer-plugin-kpaas: what this machine is (read-only)
PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
echo "uid=$(id -u)"
echo "kernel=$(uname -s)"
echo "arch=$(uname -m)"
if [ -r /etc/os-release ]; then . /etc/os-release; echo "os=${ID:-}"; echo "os_like=${ID_LIKE:-}"; echo "os_version=${VERSION_ID:-}"; echo "os_name=${PRETTY_NAME:-}"; fi
echo "pid1=$(cat /proc/1/comm 2>/dev/null)"
[ -d /run/systemd/system ] && echo "systemd=yes"
d=%s
while [ ! -d "$d" ]; do d=$(dirname "$d"); done
echo "free_kb=$(df -Pk "$d" | awk 'NR==2 {print $4}')"
echo "free_dir=$d"
for c in %s; do command -v "$c" >/dev/null 2>&1 || echo "missing=$c"; done
if [ -d %s/bundle/blobs/sha256 ]; then
  for f in %s/bundle/blobs/sha256/*; do [ -f "$f" ] && echo "blob=$(basename "$f") $(stat -c %%s "$f")"; done
fi
for t in %s; do [ -f "$t" ] && echo "file=$(sha256sum "$t")"; done
true
`, mediaDir, strings.Join(cmds, " "), mediaDir, mediaDir, quoteAll(targets))
}

// quoteAll single-quotes paths for sh (they hold no quote: readNodeFile
// refuses one).
func quoteAll(ps []string) string {
	var q []string
	for _, p := range ps {
		q = append(q, "'"+p+"'")
	}
	return strings.Join(q, " ")
}

// Target is what the check script found.
type Target struct {
	UID               string
	Kernel, Arch      string
	OS, OSLike        string
	OSVersion, OSName string
	PID1              string
	Systemd           bool
	FreeBytes         int64
	FreeDir           string
	Missing           []string
	// Blobs are the blobs of the bundle there already (hex → size).
	Blobs map[string]int64
	// Files are the node file targets there already (path → sha256 hex).
	Files map[string]string
}

// parseTarget reads the check script's output.
func parseTarget(out string) Target {
	t := Target{Blobs: map[string]int64{}, Files: map[string]string{}}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if !ok {
			continue
		}
		switch k {
		case "uid":
			t.UID = v
		case "kernel":
			t.Kernel = v
		case "arch":
			t.Arch = v
		case "os":
			t.OS = v
		case "os_like":
			t.OSLike = v
		case "os_version":
			t.OSVersion = v
		case "os_name":
			t.OSName = v
		case "pid1":
			t.PID1 = v
		case "systemd":
			t.Systemd = v == "yes"
		case "free_kb":
			if n, err := strconv.ParseInt(v, 10, 64); err == nil {
				t.FreeBytes = n << 10
			}
		case "free_dir":
			t.FreeDir = v
		case "missing":
			t.Missing = append(t.Missing, v)
		case "blob":
			if h, n, ok := strings.Cut(v, " "); ok {
				if size, err := strconv.ParseInt(n, 10, 64); err == nil {
					t.Blobs[h] = size
				}
			}
		case "file":
			if h, p, ok := strings.Cut(v, "  "); ok {
				t.Files[p] = h
			}
		}
	}
	return t
}

// Problems lists everything that keeps the machine from becoming a node,
// all at once: not root, not Linux on x86-64, no systemd as init, not a
// Debian-family OS (the agent's host phase uses systemd-networkd and
// Debian's paths), commands missing, too little space for need bytes.
func (t Target) Problems(need int64) []string {
	var ps []string
	if t.UID != "0" {
		ps = append(ps, fmt.Sprintf("the scripts run as uid %q, not root: set execute_command (default: sudo -n when the user is not root)", t.UID))
	}
	if t.Kernel != "Linux" || t.Arch != "x86_64" {
		ps = append(ps, fmt.Sprintf("%s %s: a K-PaaS node is Linux on x86_64 (the bundle is linux/amd64)", t.Kernel, t.Arch))
	}
	if !t.Systemd {
		ps = append(ps, fmt.Sprintf("systemd is not the init system (PID 1 is %q): kpaas-agent is a systemd service", t.PID1))
	}
	if !t.debianFamily() {
		name := t.OSName
		if name == "" {
			name = "an OS without /etc/os-release"
		}
		ps = append(ps, fmt.Sprintf("%s: the node OS must be Debian or Ubuntu (ID or ID_LIKE debian in /etc/os-release)", name))
	}
	if len(t.Missing) > 0 {
		var pk []string
		seen := map[string]bool{}
		for _, c := range t.Missing {
			if p := NodeCommands[c]; !seen[p] {
				seen[p] = true
				pk = append(pk, p)
			}
		}
		ps = append(ps, fmt.Sprintf("missing commands: %s (packages: %s)", strings.Join(t.Missing, ", "), strings.Join(pk, ", ")))
	}
	if t.FreeBytes < need {
		ps = append(ps, fmt.Sprintf("%s free on %s; the bundle, the node files and the margin need %s", progress.Bytes(t.FreeBytes), t.FreeDir, progress.Bytes(need)))
	}
	return ps
}

func (t Target) debianFamily() bool {
	if t.OS == "debian" || t.OS == "ubuntu" {
		return true
	}
	for _, l := range strings.Fields(t.OSLike) {
		if l == "debian" || l == "ubuntu" {
			return true
		}
	}
	return false
}
