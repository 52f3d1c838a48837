package toolchain

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// TestVersionsMatchScratchModules keeps the version constants and the pins in
// toolchain/<module>/go.mod in step.
func TestVersionsMatchScratchModules(t *testing.T) {
	want := map[string]map[string]string{
		"kube":                   {"k8s.io/kubernetes": KubernetesVersion},
		"etcd":                   {"go.etcd.io/etcd/server/v3": EtcdVersion, "go.etcd.io/etcd/etcdctl/v3": EtcdVersion},
		"containerd":             {"github.com/containerd/containerd/v2": ContainerdVersion},
		"runc":                   {"github.com/opencontainers/runc": RuncVersion},
		"cni":                    {"github.com/containernetworking/plugins": CNIPluginsVersion},
		"crictl":                 {"sigs.k8s.io/cri-tools": CrictlVersion},
		"coredns":                {"github.com/coredns/coredns": CoreDNSVersion},
		"kube-router":            {"github.com/cloudnativelabs/kube-router/v2": KubeRouterVersion},
		"local-path-provisioner": {"github.com/rancher/local-path-provisioner": LocalPathProvisionerVersion},
	}
	for _, c := range components(true) {
		if c.Module == "" {
			continue
		}
		if _, ok := want[c.Module]; !ok {
			t.Errorf("component %s: module %s has no expected pins in this test", c.Name, c.Module)
		}
	}
	for mod, pins := range want {
		f, err := os.Open(filepath.Join("..", "..", "toolchain", mod, "go.mod"))
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(strings.TrimPrefix(strings.TrimSpace(sc.Text()), "require "))
			if len(fields) >= 2 && strings.HasPrefix(fields[1], "v") {
				got[fields[0]] = fields[1]
			}
		}
		f.Close()
		for path, v := range pins {
			if got[path] != v {
				t.Errorf("toolchain/%s/go.mod requires %s %q, want %q", mod, path, got[path], v)
			}
		}
		if _, err := os.Stat(filepath.Join("..", "..", "toolchain", mod, "go.sum")); err != nil {
			t.Errorf("toolchain/%s: %v", mod, err)
		}
	}
}

func TestTarGzReproducible(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"b", "a", "c"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("plugin "+n), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	one, two := filepath.Join(dir, "1.tgz"), filepath.Join(dir, "2.tgz")
	if err := writeTarGz(one, dir, []string{"c", "a", "b"}); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(filepath.Join(dir, "a"), time.Now(), time.Now().Add(time.Hour))
	if err := writeTarGz(two, dir, []string{"a", "b", "c"}); err != nil {
		t.Fatal(err)
	}
	h1, _ := hashFile(one)
	h2, _ := hashFile(two)
	if h1 != h2 {
		t.Fatalf("archives differ: %v vs %v", h1, h2)
	}
	f, _ := os.Open(one)
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Mode != 0o755 || h.Uid != 0 || !h.ModTime.Equal(time.Unix(0, 0)) {
			t.Errorf("%s: mode %o uid %d mtime %v", h.Name, h.Mode, h.Uid, h.ModTime)
		}
		names = append(names, h.Name)
	}
	if strings.Join(names, " ") != "./a ./b ./c" {
		t.Errorf("entries %v", names)
	}
}

// fakeComponents writes a cache folder per component holding small files in
// place of the binaries, with their manifest, as Build would.
func fakeComponents(t *testing.T, root string) map[string]string {
	t.Helper()
	dirs := map[string]string{}
	for _, c := range components(true) {
		dir := filepath.Join(root, c.Name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		m := &cacheManifest{Name: c.Name, Version: c.Version, Files: map[string]fileInfo{}}
		for _, f := range c.Outputs {
			p := filepath.Join(dir, f)
			if f == HarborSupportTar {
				fakeSupportTar(t, p)
			} else if f == HarborPortalHTML {
				fakePortalTar(t, p)
			} else if err := os.WriteFile(p, []byte("#!fake "+c.Name+"/"+f+"\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			fi, err := hashFile(p)
			if err != nil {
				t.Fatal(err)
			}
			m.Files[f] = fi
		}
		data, _ := json.Marshal(m)
		if err := os.WriteFile(filepath.Join(dir, manifestName), data, 0o644); err != nil {
			t.Fatal(err)
		}
		dirs[c.Name] = dir
	}
	return dirs
}

// fakeSupportTar writes a Harbor support tar with a small file for each
// path the images extract.
func fakeSupportTar(t *testing.T, dest string) {
	t.Helper()
	root := filepath.Join(t.TempDir(), "support")
	for _, spec := range harborImageSpecs(true) {
		for _, x := range spec.Extract {
			if x.Tar != HarborSupportTar {
				continue
			}
			file := filepath.Join(root, x.Src)
			if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(file, []byte("fake "+x.Src+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := writeTreeTar(dest, root, time.Unix(0, 0)); err != nil {
		t.Fatal(err)
	}
}

// fakePortalTar writes a portal web root tar as the harbor-portal
// component's Finish does (below html/).
func fakePortalTar(t *testing.T, dest string) {
	t.Helper()
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "html"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "html", "index.html"), []byte("<harbor-app></harbor-app>\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeTreeTar(dest, root, time.Unix(0, 0)); err != nil {
		t.Fatal(err)
	}
}

// testBuilder assembles every image, Harbor's optional portal too.
func testBuilder(cache string) *builder {
	return &builder{opts: &Options{CacheDir: cache, SourceDateEpoch: time.Unix(0, 0).UTC(), HarborPortal: true}, goVersion: "go-test"}
}

// TestImagesAndMirror assembles the images twice in separate caches (same
// digests), writes the mirror twice (no duplicate index entries, files and
// SHA256SUMS unchanged), and checks the media types and references.
func TestImagesAndMirror(t *testing.T) {
	ctx := context.Background()
	dirs := fakeComponents(t, t.TempDir())

	dir1, res1, cached, err := testBuilder(t.TempDir()).images(ctx, dirs)
	if err != nil || cached {
		t.Fatalf("images: cached=%v err=%v", cached, err)
	}
	b2 := testBuilder(t.TempDir())
	_, res2, _, err := b2.images(ctx, dirs)
	if err != nil {
		t.Fatal(err)
	}
	for i := range res1 {
		if res1[i].Digest != res2[i].Digest {
			t.Errorf("%s: digest %s then %s", res1[i].Ref, res1[i].Digest, res2[i].Digest)
		}
	}
	if _, _, cached, err := b2.images(ctx, dirs); err != nil || !cached {
		t.Errorf("second images call: cached=%v err=%v", cached, err)
	}

	mirror := t.TempDir()
	for range 2 {
		if err := writeMirror(mirror, dirs, dir1); err != nil {
			t.Fatal(err)
		}
	}
	p, err := layout.FromPath(filepath.Join(mirror, "oci"))
	if err != nil {
		t.Fatal(err)
	}
	idx, _ := p.ImageIndex()
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	refs := map[string]string{}
	for _, d := range im.Manifests {
		ref := d.Annotations[RefNameAnnotation]
		if _, dup := refs[ref]; dup {
			t.Errorf("duplicate index entry %s", ref)
		}
		refs[ref] = d.Digest.String()
		if d.MediaType != types.OCIManifestSchema1 {
			t.Errorf("%s: media type %s", ref, d.MediaType)
		}
		img, err := p.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		m, _ := img.Manifest()
		if m.Config.MediaType != types.OCIConfigJSON {
			t.Errorf("%s: config media type %s", ref, m.Config.MediaType)
		}
		for _, l := range m.Layers {
			if l.MediaType != types.OCILayer {
				t.Errorf("%s: layer media type %s", ref, l.MediaType)
			}
		}
		cf, _ := img.ConfigFile()
		if !cf.Created.Time.Equal(time.Unix(0, 0)) || cf.OS != "linux" || cf.Architecture != "amd64" {
			t.Errorf("%s: config created %v os %s arch %s", ref, cf.Created, cf.OS, cf.Architecture)
		}
	}
	for _, want := range []string{
		"registry.k8s.io/kube-apiserver:v1.35.4", "registry.k8s.io/kube-controller-manager:v1.35.4",
		"registry.k8s.io/kube-scheduler:v1.35.4", "registry.k8s.io/kube-proxy:v1.35.4",
		"registry.k8s.io/etcd:3.6.16-0", "registry.k8s.io/etcd:" + KubeadmEtcdTag,
		"registry.k8s.io/coredns/coredns:v1.14.7", "registry.k8s.io/coredns/coredns:" + KubeadmCoreDNSTag,
		"registry.k8s.io/pause:3.10.1", "docker.io/cloudnativelabs/kube-router:v2.1.0",
	} {
		if refs[want] == "" {
			t.Errorf("no %s in the mirror", want)
		}
	}
	if refs["registry.k8s.io/etcd:3.6.16-0"] != refs["registry.k8s.io/etcd:"+KubeadmEtcdTag] {
		t.Error("etcd alias names another manifest")
	}

	// A rebuild with other digests replaces every entry and leaves no
	// unreferenced blob behind.
	b3 := testBuilder(t.TempDir())
	b3.opts.SourceDateEpoch = time.Unix(1, 0)
	dir3, _, _, err := b3.images(ctx, dirs)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeMirror(mirror, dirs, dir3); err != nil {
		t.Fatal(err)
	}
	reachable := map[string]bool{}
	if err := references(filepath.Join(mirror, "oci"), "index.json", reachable); err != nil {
		t.Fatal(err)
	}
	blobs, _ := os.ReadDir(filepath.Join(mirror, "oci", "blobs", "sha256"))
	for _, b := range blobs {
		if !reachable["sha256:"+b.Name()] {
			t.Errorf("unreferenced blob %s left after replacing", b.Name())
		}
	}
	if len(blobs) != len(reachable) {
		t.Errorf("%d blobs, %d reachable", len(blobs), len(reachable))
	}

	sums, err := os.ReadFile(filepath.Join(mirror, "files", "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(sums)), "\n")
	if len(lines) != len(MirrorFiles()) {
		t.Errorf("SHA256SUMS has %d lines, want %d", len(lines), len(MirrorFiles()))
	}
	for _, l := range lines {
		sum, name, ok := strings.Cut(l, "  ")
		if !ok {
			t.Fatalf("bad line %q", l)
		}
		fi, err := hashFile(filepath.Join(mirror, "files", name))
		if err != nil || fi.SHA256 != sum {
			t.Errorf("%s: sha256 %s, SHA256SUMS says %s (%v)", name, fi.SHA256, sum, err)
		}
	}
}
