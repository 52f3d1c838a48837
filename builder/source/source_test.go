package source_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"kpaas.dev/appliance/api/bundle/v1alpha1"
	"kpaas.dev/appliance/builder/source"
	"kpaas.dev/appliance/internal/bundle"
	"kpaas.dev/appliance/internal/ref"
	"kpaas.dev/appliance/internal/testenv"
)

func mustRef(t *testing.T, s string) ref.Ref {
	t.Helper()
	r, err := ref.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// mirror builds a mirror folder: an OCI layout with an image and an index,
// a docker archive, a chart package and a file.
func mirror(t *testing.T) (dir string, digests map[string]v1.Hash) {
	t.Helper()
	ctx := context.Background()
	dir = t.TempDir()
	digests = map[string]v1.Hash{}
	s, err := bundle.Create(filepath.Join(dir, "images", "oci"))
	if err != nil {
		t.Fatal(err)
	}
	w := s.NewWriter()
	img, _ := random.Image(1024, 2)
	idx, _ := random.Index(512, 1, 2)
	di, err := w.WriteImage(ctx, img)
	if err != nil {
		t.Fatal(err)
	}
	dx, err := w.WriteIndex(ctx, idx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetEntries([]v1.Descriptor{
		bundle.Annotate(di, bundle.KindImage, "docker.io/library/nginx:1.25"),
		bundle.Annotate(dx, bundle.KindImage, "quay.io/calico/node:v3.24.5"),
	}); err != nil {
		t.Fatal(err)
	}
	digests["nginx"], digests["calico"] = di.Digest, dx.Digest

	arch, _ := random.Image(2048, 1)
	tag, _ := name.NewTag("registry.k8s.io/pause:3.10")
	if err := tarball.WriteToFile(filepath.Join(dir, "pause.tar"), tag, arch); err != nil {
		t.Fatal(err)
	}
	digests["pause"], _ = arch.Digest()

	os.MkdirAll(filepath.Join(dir, "files"), 0o755)
	os.WriteFile(filepath.Join(dir, "files", "kubeadm"), []byte("not really kubeadm\n"), 0o755)
	return dir, digests
}

func TestMirrorResolvesImages(t *testing.T) {
	dir, digests := mirror(t)
	ctx := context.Background()
	for name, dir := range mirrorPaths(t, dir) {
		t.Run(name, func(t *testing.T) {
			m := &source.Mirror{Dir: dir}
			for _, tc := range []struct {
				ref, key string
				index    bool
			}{
				{"nginx:1.25", "nginx", false},
				{"docker.io/library/nginx:1.25", "nginx", false},
				{"quay.io/calico/node:v3.24.5", "calico", true},
				{"registry.k8s.io/pause:3.10", "pause", false},
			} {
				img, err := m.Resolve(ctx, mustRef(t, tc.ref))
				if err != nil {
					t.Errorf("Resolve(%s): %v", tc.ref, err)
					continue
				}
				d, err := img.Digest()
				if err != nil {
					t.Fatal(err)
				}
				if d != digests[tc.key] {
					t.Errorf("Resolve(%s) = %s, want %s", tc.ref, d, digests[tc.key])
				}
				if (img.Index != nil) != tc.index {
					t.Errorf("Resolve(%s): index = %v, want %v", tc.ref, img.Index != nil, tc.index)
				}
			}
			// Pinned by digest: found whatever the tag; a wrong digest is not found.
			if _, err := m.Resolve(ctx, mustRef(t, "docker.io/library/nginx@"+digests["nginx"].String())); err != nil {
				t.Errorf("pinned by digest: %v", err)
			}
			wrong := "docker.io/library/nginx:1.25@sha256:" + "00000000000000000000000000000000000000000000000000000000000000ff"
			if _, err := m.Resolve(ctx, mustRef(t, wrong)); err == nil {
				t.Errorf("a reference pinned to another digest resolved")
			}
			if _, err := m.Resolve(ctx, mustRef(t, "docker.io/library/absent:1")); !errors.Is(err, source.ErrNotFound) {
				t.Errorf("absent image: err = %v, want ErrNotFound", err)
			}
		})
	}
}

func TestMirrorFilesAndCharts(t *testing.T) {
	dir, _ := mirror(t)
	os.MkdirAll(filepath.Join(dir, "charts"), 0o755)
	os.WriteFile(filepath.Join(dir, "charts", "vault-0.22.0.tgz"), []byte("x"), 0o644)
	for name, dir := range mirrorPaths(t, dir) {
		t.Run(name, func(t *testing.T) {
			m := &source.Mirror{Dir: dir}
			f := &source.Fetcher{Mirror: source.Mirrors{m}, Offline: true}
			// sha256 of "not really kubeadm\n"
			const sum = "0b1bba8d1a1a0c0d2b0ae1c4b9f4a07b0d39b36be1e5b2d6d3b6f1b0f1e6d2a9"
			rc, _, _, err := f.OpenFile(context.Background(), v1alpha1.File{Name: "kubeadm", Source: "https://example.invalid/kubeadm", SHA256: sum})
			if err == nil {
				rc.Close()
				t.Fatalf("a file whose sha256 is not in the mirror was found offline")
			}
			real, err := sha256File(filepath.Join(dir, "files", "kubeadm"))
			if err != nil {
				t.Fatal(err)
			}
			rc, size, src, err := f.OpenFile(context.Background(), v1alpha1.File{Name: "kubeadm", Source: "https://example.invalid/kubeadm", SHA256: real})
			if err != nil {
				t.Fatalf("OpenFile from the mirror: %v", err)
			}
			rc.Close()
			if size != int64(len("not really kubeadm\n")) || src == "" {
				t.Errorf("OpenFile = size %d, source %q", size, src)
			}
			if p, err := m.Chart("vault", "0.22.0"); err != nil || filepath.Base(p) != "vault-0.22.0.tgz" {
				t.Errorf("Chart(vault, 0.22.0) = %q, %v", p, err)
			}
			if _, err := m.Chart("vault", "0.23.0"); !errors.Is(err, source.ErrNotFound) {
				t.Errorf("Chart(vault, 0.23.0): err = %v, want ErrNotFound", err)
			}
		})
	}
}

// mirrorPaths are the mirror folder dir and a symbolic link to it, by
// name: a mirror given as a link is searched like the folder.
func mirrorPaths(t *testing.T, dir string) map[string]string {
	t.Helper()
	link := filepath.Join(t.TempDir(), "mirror")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	return map[string]string{"folder": dir, "link": link}
}

func TestChainOrderAndNotFound(t *testing.T) {
	dir, digests := mirror(t)
	empty := t.TempDir()
	c := source.Chain{&source.Mirror{Dir: filepath.Join(empty)}, &source.Mirror{Dir: dir}}
	img, err := c.Resolve(context.Background(), mustRef(t, "nginx:1.25"))
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := img.Digest(); d != digests["nginx"] {
		t.Errorf("chain resolved %s, want %s", d, digests["nginx"])
	}
	_, err = c.Resolve(context.Background(), mustRef(t, "nginx:9"))
	if !errors.Is(err, source.ErrNotFound) {
		t.Errorf("err = %v, want ErrNotFound naming both mirrors", err)
	}
}

func sha256File(p string) (string, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return "", err
	}
	h, _, err := v1.SHA256(bytes.NewReader(b))
	return h.Hex, err
}

// TestOCIArchive: a tarred OCI layout (skopeo's oci-archive:) resolves by
// its reference annotations; an entry escaping the archive is refused.
func TestOCIArchive(t *testing.T) {
	dir, digests := mirror(t)
	layoutDir := filepath.Join(dir, "images", "oci")
	tarPath := filepath.Join(t.TempDir(), "images.tar")
	cmd := exec.Command(testenv.RequireTool(t, "tar"), "-cf", tarPath, "-C", layoutDir, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tar: %v %s", err, out)
	}
	a := &source.Archive{Path: tarPath, CacheDir: t.TempDir()}
	img, err := a.Resolve(context.Background(), mustRef(t, "quay.io/calico/node:v3.24.5"))
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := img.Digest(); d != digests["calico"] || img.Index == nil {
		t.Errorf("resolved %s (index %v), want the index %s", d, img.Index != nil, digests["calico"])
	}

	evil := filepath.Join(t.TempDir(), "evil.tar")
	f, _ := os.Create(evil)
	tw := tar.NewWriter(f)
	for _, n := range []string{"oci-layout", "../escape"} {
		tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: 2, Typeflag: tar.TypeReg})
		tw.Write([]byte("{}"))
	}
	tw.Close()
	f.Close()
	bad := &source.Archive{Path: evil, CacheDir: t.TempDir()}
	if _, err := bad.Resolve(context.Background(), mustRef(t, "nginx:1")); err == nil || !strings.Contains(err.Error(), "escapes") {
		t.Errorf("err = %v, want the escaping entry refused", err)
	}
}
