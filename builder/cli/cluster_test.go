package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"kpaas.dev/appliance/agent/earlyboot"
	"kpaas.dev/appliance/api/cluster/v1alpha1"
	"kpaas.dev/appliance/internal/clustersecrets"
	"kpaas.dev/appliance/internal/names"
)

// cli runs the CLI and returns stdout and stderr together, for the
// checks that no secret is ever printed.
func cli(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := Run(context.Background(), args, strings.NewReader(""), &out, &out)
	return out.String(), err
}

var siteFlags = []string{
	"--name", "site", "--endpoint", "10.0.0.11",
	"--node", "cp1=control-plane,52:54:00:00:00:01,10.0.0.11/24,gw=10.0.0.1,dns=10.0.0.1,ntp=ntp.example.org",
	"--node", "w1=worker,52:54:00:00:00:02,10.0.0.21/24,gw=10.0.0.1",
	"--node", "w2=worker,,10.0.0.22/24",
}

// initSite runs cluster init into a new folder and returns it with the
// output.
func initSite(t *testing.T) (dir, out string) {
	t.Helper()
	dir = filepath.Join(t.TempDir(), "site")
	out, err := cli(t, append([]string{"cluster", "init", "-o", dir}, siteFlags...)...)
	if err != nil {
		t.Fatalf("cluster init: %v\n%s", err, out)
	}
	return dir, out
}

// assertNoSecrets fails when out holds any line of any secret of dir (a
// PEM body line, the token, a kubeconfig data value).
func assertNoSecrets(t *testing.T, dir, out string) {
	t.Helper()
	s, err := clustersecrets.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range s {
		for _, line := range strings.Split(string(b), "\n") {
			line = strings.TrimSpace(line)
			if _, v, ok := strings.Cut(line, ": "); ok {
				line = v // kubeconfig: key: value
			}
			if len(line) < 16 || strings.HasPrefix(line, "-----") || strings.HasPrefix(line, "https://") {
				continue
			}
			if strings.Contains(out, line) {
				t.Errorf("output holds a line of secret %s", name)
				break
			}
		}
	}
	if strings.Contains(out, "PRIVATE KEY") || strings.Contains(out, "BEGIN CERTIFICATE") {
		t.Error("output holds PEM")
	}
}

func TestClusterInit(t *testing.T) {
	dir, out := initSite(t)
	assertNoSecrets(t, dir, out)
	if !strings.Contains(out, "wrote "+filepath.Join(dir, "secrets/pki/ca.key")+" (0600)\n") ||
		!strings.Contains(out, "wrote "+filepath.Join(dir, "cluster.yaml")+" (0644)\n") {
		t.Errorf("output does not list the files with their modes:\n%s", out)
	}
	c, err := v1alpha1.ParseFile(filepath.Join(dir, "cluster.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Metadata.Name != "site" || len(c.Nodes) != 3 || c.Nodes[0].Gateway != "10.0.0.1" || c.Nodes[0].NTP[0] != "ntp.example.org" ||
		c.Nodes[2].MACs != nil || c.ControlPlaneEndpoint.Port != 6443 {
		t.Errorf("cluster.yaml: %+v", c)
	}
	s, err := clustersecrets.Load(dir)
	if err != nil || len(s) != len(clustersecrets.Names) {
		t.Fatalf("secrets: %d, %v", len(s), err)
	}
	hash, _ := s.CAHash()
	if !strings.Contains(out, "CA hash "+hash) {
		t.Errorf("no CA hash in output:\n%s", out)
	}

	// A second init refuses and changes nothing.
	before, _ := os.ReadFile(filepath.Join(dir, "secrets/pki/ca.key"))
	out, err = cli(t, append([]string{"cluster", "init", "-o", dir}, siteFlags...)...)
	if err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("second init: %v\n%s", err, out)
	}
	after, _ := os.ReadFile(filepath.Join(dir, "secrets/pki/ca.key"))
	if !bytes.Equal(before, after) {
		t.Fatal("a refused init changed ca.key")
	}
	out, err = cli(t, append([]string{"cluster", "init", "--force", "--json", "-o", dir}, siteFlags...)...)
	if err != nil {
		t.Fatal(err)
	}
	assertNoSecrets(t, dir, out)
	var res clusterInitResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if res.Cluster != "site" || res.Nodes != 3 || len(res.Files) != 1+len(clustersecrets.Names) || !strings.HasPrefix(res.CAHash, "sha256:") {
		t.Errorf("json: %+v", res)
	}
	for _, f := range res.Files[1:] {
		if f.Mode != "0600" {
			t.Errorf("%s: mode %s", f.Path, f.Mode)
		}
	}
	after, _ = os.ReadFile(filepath.Join(dir, "secrets/pki/ca.key"))
	if bytes.Equal(before, after) {
		t.Fatal("--force kept the old CA")
	}
}

func TestClusterInitErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--name", "site", "--endpoint", "10.0.0.12", "--node", "cp1=control-plane,,10.0.0.11/24"}, "controlPlaneEndpoint.host: 10.0.0.12 is not the address of a control-plane node"},
		{[]string{"--name", "site", "--endpoint", "10.0.0.11:x", "--node", "cp1=control-plane,,10.0.0.11/24"}, `port "x" is not a number`},
		{[]string{"--name", "site", "--endpoint", "10.0.0.11", "--node", "cp1=control-plane,10.0.0.11/24"}, "ROLE, MAC and ADDR/PREFIX are required"},
		{[]string{"--name", "site", "--endpoint", "10.0.0.11", "--node", "cp1=control-plane,,10.0.0.11/24,via=1"}, `unknown option "via=1"`},
		{[]string{"--name", "site"}, "give --name, --endpoint and at least one --node"},
		{[]string{"--from", "x.yaml", "--name", "site"}, "leave out --name"},
		{[]string{"--rotate-token", "--name", "site"}, "--rotate-token needs --from"},
	} {
		out, err := cli(t, append([]string{"cluster", "init", "-o", dir}, tt.args...)...)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: got %v, want %q\n%s", tt.args, err, tt.want, out)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("failed inits wrote %d files", len(ents))
	}
}

func TestClusterInitFromAndRotateToken(t *testing.T) {
	src := filepath.Join(t.TempDir(), "my.yaml")
	data, err := os.ReadFile("../../api/cluster/v1alpha1/testdata/site.yaml")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(src, data, 0o644)
	dir := filepath.Join(t.TempDir(), "site")
	out, err := cli(t, "cluster", "init", "--from", src, "-o", dir)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	assertNoSecrets(t, dir, out)
	// The file is copied as it is, comments and all.
	if got, _ := os.ReadFile(filepath.Join(dir, "cluster.yaml")); !bytes.Equal(got, data) {
		t.Error("--from did not copy the file unchanged")
	}
	before, _ := clustersecrets.Load(dir)
	out, err = cli(t, "cluster", "init", "--from", filepath.Join(dir, "cluster.yaml"), "--rotate-token", "-o", dir)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	assertNoSecrets(t, dir, out)
	if strings.Count(out, "wrote ") != 1 || !strings.Contains(out, "secrets/token (0600)") {
		t.Errorf("rotation output:\n%s", out)
	}
	after, _ := clustersecrets.Load(dir)
	for _, name := range clustersecrets.Names {
		if same := bytes.Equal(before[name], after[name]); same == (name == v1alpha1.Token) {
			t.Errorf("%s: unchanged=%v after --rotate-token", name, same)
		}
	}
	if _, err := cli(t, "cluster", "init", "--from", src, "--rotate-token", "-o", t.TempDir()); err == nil {
		t.Error("--rotate-token without secrets succeeded")
	}
}

func TestClusterLint(t *testing.T) {
	dir := t.TempDir()
	good, bad := filepath.Join(dir, "good.yaml"), filepath.Join(dir, "bad.yaml")
	os.WriteFile(good, []byte(`apiVersion: kpaas.dev/v1alpha1
kind: Cluster
metadata: {name: site}
controlPlaneEndpoint: {host: api.site.example}
nodes:
  - {name: cp1, role: control-plane, address: 10.0.0.11/24}
`), 0o644)
	os.WriteFile(bad, []byte(`apiVersion: kpaas.dev/v1alpha1
kind: Cluster
metadata: {name: site}
controlPlaneEndpoint: {host: api.site.example}
nodes:
  - name: cp1
    role: worker
    adress: 10.0.0.11/24
`), 0o644)
	out, err := cli(t, "cluster", "lint", good)
	if err != nil || out != good+": ok (cluster site: 1 control-plane, 0 worker nodes; endpoint api.site.example:6443)\n" {
		t.Errorf("lint good: %v %q", err, out)
	}
	out, err = cli(t, "cluster", "lint", good, bad)
	want := good + ": ok (cluster site: 1 control-plane, 0 worker nodes; endpoint api.site.example:6443)\n" +
		bad + ":6:3: nodes: no node has role \"control-plane\": one must run kubeadm init\n" +
		bad + ":6:5: nodes[0].address: required\n" +
		bad + ":8:5: nodes[0].adress: unknown field\n"
	if err == nil || out != want {
		t.Errorf("lint bad: %v\n%s\nwant\n%s", err, out, want)
	}
	out, err = cli(t, "cluster", "lint", "--json", good, bad, filepath.Join(dir, "missing.yaml"))
	if err == nil || !strings.Contains(err.Error(), "2 of 3") {
		t.Errorf("lint --json: %v", err)
	}
	var results []lintResult
	if err := json.Unmarshal([]byte(out), &results); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(results) != 3 || !results[0].OK || results[1].OK || len(results[1].Problems) != 3 || results[1].Problems[2].Line != 8 ||
		results[2].OK || len(results[2].Problems) != 1 {
		t.Errorf("json: %+v", results)
	}
}

// needTools skips when a host tool is missing (Debian: dosfstools, mtools).
func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed: %v", tool, err)
		}
	}
}

func runTool(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1", "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// configFS checks a config disk with independent tools and earlyboot's
// probing, and returns the files in it as mcopy extracts them.
func configFS(t *testing.T, img string) map[string][]byte {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// What kpaas-init does: find the partition by GPT name, probe it.
	parts, err := earlyboot.ReadGPT(f)
	if err != nil || len(parts) != 1 {
		t.Fatalf("GPT: %v %v", parts, err)
	}
	p := parts[0]
	start, size := int64(p.FirstLBA)*512, int64(p.LastLBA-p.FirstLBA+1)*512
	dev := earlyboot.Device{Name: "sdb1", Disk: "sdb", PartN: 1, PartName: p.Name,
		FS: earlyboot.Probe(io.NewSectionReader(f, start, size))}
	found := earlyboot.Find([]earlyboot.Device{dev}, earlyboot.Config{Root: names.PartRootA})
	if found.Config == nil || found.Config.FS.Type != "vfat" {
		t.Fatalf("earlyboot does not take %+v for the config disk", dev)
	}
	// fsck.vfat on the file system alone.
	fsImg := filepath.Join(t.TempDir(), "fs.img")
	w, _ := os.Create(fsImg)
	io.Copy(w, io.NewSectionReader(f, start, size))
	w.Close()
	runTool(t, "fsck.vfat", "-n", fsImg)
	at := img + "@@" + strconv.FormatInt(start, 10)
	listing := runTool(t, "mdir", "-i", at, "-/", "-b", "::")
	if got := runTool(t, "mtype", "-i", at, "::/cluster.yaml"); !strings.Contains(got, "kind: Cluster") {
		t.Errorf("mtype cluster.yaml: %q", got)
	}
	out := t.TempDir()
	runTool(t, "mcopy", "-s", "-n", "-i", at, "::/*", out)
	files := map[string][]byte{}
	filepath.WalkDir(out, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(out, p)
			files[filepath.ToSlash(rel)], _ = os.ReadFile(p)
		}
		return nil
	})
	for name := range files {
		if !strings.Contains(listing, "::/"+name+"\n") {
			t.Errorf("mdir does not list %s:\n%s", name, listing)
		}
	}
	return files
}

func TestClusterConfigDisk(t *testing.T) {
	needTools(t, "fsck.vfat", "mdir", "mtype", "mcopy")
	t.Setenv("SOURCE_DATE_EPOCH", "1767225600")
	dir, _ := initSite(t)
	secrets, err := clustersecrets.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	clusterYAML, _ := os.ReadFile(filepath.Join(dir, "cluster.yaml"))
	imgDir := t.TempDir()

	for _, tt := range []struct {
		node, role string
		want       []string
	}{
		{"w1", "worker", []string{"cluster.yaml", "secrets/pki/ca.crt", "secrets/token"}},
		{"cp1", "control-plane", []string{"cluster.yaml", "secrets/pki/ca.crt", "secrets/pki/ca.key", "secrets/pki/etcd/ca.crt", "secrets/pki/etcd/ca.key",
			"secrets/pki/front-proxy-ca.crt", "secrets/pki/front-proxy-ca.key", "secrets/pki/sa.key", "secrets/pki/sa.pub", "secrets/token"}},
	} {
		t.Run(tt.node, func(t *testing.T) {
			img := filepath.Join(imgDir, tt.node+".img")
			out, err := cli(t, "cluster", "config-disk", dir, "--node", tt.node, "-o", img)
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			assertNoSecrets(t, dir, out)
			if !strings.Contains(out, "for node "+tt.node+" ("+tt.role+")") {
				t.Errorf("output: %s", out)
			}
			if fi, _ := os.Stat(img); fi.Mode().Perm() != 0o600 {
				t.Errorf("image mode %v", fi.Mode())
			}
			files := configFS(t, img)
			var names []string
			for name := range files {
				names = append(names, name)
			}
			if strings.Join(slices.Sorted(slices.Values(names)), " ") != strings.Join(tt.want, " ") {
				t.Errorf("files %v, want %v", names, tt.want)
			}
			if !bytes.Equal(files["cluster.yaml"], clusterYAML) {
				t.Error("cluster.yaml differs")
			}
			for name, b := range files {
				if sec, ok := strings.CutPrefix(name, "secrets/"); ok && !bytes.Equal(b, secrets[sec]) {
					t.Errorf("%s differs from the secret", name)
				}
			}
			raw, _ := os.ReadFile(img)
			if bytes.Contains(raw, []byte("client-key-data")) {
				t.Error("admin.conf's key is on a config disk")
			}
			if tt.role == "worker" {
				// No private key anywhere: not in a file, not in the image's bytes.
				for name, b := range files {
					if bytes.Contains(b, []byte("PRIVATE KEY")) {
						t.Errorf("worker image: %s holds a private key", name)
					}
				}
				if bytes.Contains(raw, []byte("PRIVATE KEY")) {
					t.Error("worker image bytes hold a private key")
				}
			}
			// Reproducible with SOURCE_DATE_EPOCH.
			again := filepath.Join(imgDir, tt.node+"-again.img")
			if _, err := cli(t, "cluster", "config-disk", dir, "--node", tt.node, "-o", again); err != nil {
				t.Fatal(err)
			}
			if b, _ := os.ReadFile(again); !bytes.Equal(b, raw) {
				t.Error("a second write differs")
			}
		})
	}

	out, err := cli(t, "cluster", "config-disk", dir, "--node", "w9", "-o", filepath.Join(imgDir, "x.img"))
	if err == nil || !strings.Contains(err.Error(), `no node "w9" (nodes: cp1, w1, w2)`) {
		t.Errorf("unknown node: %v\n%s", err, out)
	}
	out, err = cli(t, "cluster", "config-disk", dir, "--node", "w1", "--json", "-o", filepath.Join(imgDir, "j.img"))
	if err != nil {
		t.Fatal(err)
	}
	var res configDiskResult
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Node != "w1" || len(res.Image.Files) != 3 || res.Image.Partitions[0].Name != "KPAAS-CONFIG" {
		t.Errorf("json: %v %+v", err, res)
	}
	// Secrets readable by others are refused.
	os.Chmod(filepath.Join(dir, "secrets", "token"), 0o644)
	if _, err := cli(t, "cluster", "config-disk", dir, "--node", "w1", "-o", filepath.Join(imgDir, "y.img")); err == nil || !strings.Contains(err.Error(), "mode 0644") {
		t.Errorf("open token: %v", err)
	}
}

// TestImageBuildChecksConfig: image build lints --config before anything
// else, so a bad cluster.yaml never reaches the media.
func TestImageBuildChecksConfig(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "cluster.yaml")
	os.WriteFile(bad, []byte("apiVersion: kpaas.dev/v1alpha1\nkind: Cluster\nmetadata: {name: site}\n"), 0o644)
	out, err := cli(t, "image", "build", "--bundle", filepath.Join(dir, "none"), "-o", filepath.Join(dir, "x"), "--config", bad)
	if err == nil || !strings.Contains(err.Error(), "--config: "+bad+":1:1: controlPlaneEndpoint.host: required") {
		t.Errorf("got %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "x.raw")); err == nil {
		t.Error("media written with a bad config")
	}
}
