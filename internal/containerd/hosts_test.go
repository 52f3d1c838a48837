package containerd

import (
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"kpaas.dev/appliance/internal/bundle"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

const mirror = "http://127.0.0.1:5000"

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if string(got) != string(want) {
		t.Errorf("%s differs from the golden file:\n--- got\n%s--- want\n%s", name, got, want)
	}
}

func TestHostsTOMLGolden(t *testing.T) {
	for _, up := range []string{"docker.io", "registry.k8s.io", "quay.io", "ghcr.io", "gcr.io", "harbor.example.com:8443"} {
		t.Run(up, func(t *testing.T) {
			golden(t, strings.ReplaceAll(up, ":", "_")+".hosts.toml", HostsTOML(up, SeedMirror(mirror)))
		})
	}
	// With the cluster's Harbor first: its project for the upstream.
	golden(t, "docker.io.harbor.hosts.toml", HostsTOML("docker.io", Mirrors("docker.io", "http://10.42.0.11:30002", mirror)...))
	golden(t, "harbor.example.com_8443.harbor.hosts.toml", HostsTOML("harbor.example.com:8443", Mirrors("harbor.example.com:8443", "http://10.42.0.11:30002", mirror)...))
}

// hostsFile is containerd's hosts.toml schema, the parts we write.
type hostsFile struct {
	Server string `toml:"server"`
	Host   map[string]struct {
		Capabilities []string `toml:"capabilities"`
	} `toml:"host"`
}

// TestHostsTOMLParses reads the output back with a TOML parser, as
// containerd does, and checks the fields it uses.
func TestHostsTOMLParses(t *testing.T) {
	for up, server := range map[string]string{
		"docker.io":       "https://registry-1.docker.io",
		"registry.k8s.io": "https://registry.k8s.io",
		"myreg:5000":      "https://myreg:5000",
	} {
		var hf hostsFile
		md, err := toml.Decode(string(HostsTOML(up, SeedMirror(mirror))), &hf)
		if err != nil {
			t.Fatalf("%s: %v", up, err)
		}
		if u := md.Undecoded(); len(u) > 0 {
			t.Errorf("%s: unexpected keys %v", up, u)
		}
		if hf.Server != server {
			t.Errorf("%s: server = %q, want %q", up, hf.Server, server)
		}
		h, ok := hf.Host[mirror]
		if !ok || len(hf.Host) != 1 {
			t.Fatalf("%s: hosts %v, want only %s", up, hf.Host, mirror)
		}
		if !reflect.DeepEqual(h.Capabilities, []string{"pull", "resolve"}) {
			t.Errorf("%s: capabilities %v", up, h.Capabilities)
		}
	}
}

func entry(r string) bundle.Entry {
	return bundle.Entry{Kind: bundle.KindImage, Ref: r, Descriptor: v1.Descriptor{}}
}

func TestUpstreams(t *testing.T) {
	got := Upstreams([]bundle.Entry{
		entry("docker.io/library/nginx:1.25"),
		entry("quay.io/calico/node:v3.24.5"),
		entry("registry.k8s.io/ingress-nginx/controller:v1.4.0@sha256:34ee929b111ffc7aa426ffd409af44da48e5a0eea1eb2207994d9e0c0882d143"),
		entry("index.docker.io/goharbor/harbor-core:v2.6.0"),
		entry("docker.elastic.co/elasticsearch/elasticsearch:8.5.0"),
		entry("harbor.example.com:8443/kpaas/portal-ui:1.4.1"),
		entry(""),            // no reference: skipped
		entry("Not A Ref!!"), // invalid: skipped
	})
	want := []string{"docker.elastic.co", "docker.io", "gcr.io", "ghcr.io", "harbor.example.com:8443", "quay.io", "registry.k8s.io"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Upstreams = %v\nwant        %v", got, want)
	}
}

func TestWriteHostsDir(t *testing.T) {
	dir := t.TempDir()
	ups := []string{"docker.io", "quay.io", "registry.k8s.io"}
	if err := WriteHostsDir(dir, ups, "", mirror); err != nil {
		t.Fatal(err)
	}
	var files []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			files = append(files, filepath.ToSlash(rel))
		}
		return err
	})
	wantFiles := []string{"docker.io/hosts.toml", "quay.io/hosts.toml", "registry.k8s.io/hosts.toml"}
	if !reflect.DeepEqual(files, wantFiles) {
		t.Fatalf("files %v, want %v", files, wantFiles)
	}
	for _, u := range ups {
		b, err := os.ReadFile(filepath.Join(dir, u, "hosts.toml"))
		if err != nil {
			t.Fatal(err)
		}
		golden(t, u+".hosts.toml", b)
	}
	// Writing again changes nothing, not even the modification time.
	p := filepath.Join(dir, "quay.io", "hosts.toml")
	before, _ := os.Stat(p)
	if err := WriteHostsDir(dir, ups, "", mirror); err != nil {
		t.Fatal(err)
	}
	after, _ := os.Stat(p)
	if !before.ModTime().Equal(after.ModTime()) {
		t.Errorf("rewriting identical content touched %s", p)
	}
}

func TestWriteHostsDirRejects(t *testing.T) {
	dir := t.TempDir()
	err := WriteHostsDir(dir, []string{"docker.io", "../etc", "a/b", ""}, "", "ftp://x")
	if err == nil {
		t.Fatal("want an error")
	}
	for _, want := range []string{`"../etc"`, `"a/b"`, `""`, `"ftp://x"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("wrote %d entries despite invalid input", len(ents))
	}
	for _, bad := range []string{"http://127.0.0.1:5000?x=1", `http://a"b`, "127.0.0.1:5000", "http://user@host"} {
		if err := ValidateMirror(bad); err == nil {
			t.Errorf("ValidateMirror(%q) accepted it", bad)
		}
	}
}

// Harbor's own host gets a hosts.toml too: users' images in its projects
// are pulled from it over plain HTTP.
func TestWriteHostsDirHarborHost(t *testing.T) {
	dir := t.TempDir()
	if err := WriteHostsDir(dir, []string{"docker.io"}, "http://10.0.0.11:30002", mirror); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "10.0.0.11:30002", "hosts.toml"))
	if err != nil {
		t.Fatal(err)
	}
	want := `# Written by kpaas: the cluster's Harbor, for the images of its own projects.
server = "http://10.0.0.11:30002"

[host."http://10.0.0.11:30002"]
  capabilities = ["pull", "resolve"]
`
	if string(b) != want {
		t.Errorf("got:\n%s\nwant:\n%s", b, want)
	}
	if _, _, err := HarborHost("http://har_bor:30002"); err == nil {
		t.Errorf("a URL whose host is not a registry host was accepted")
	}
}
