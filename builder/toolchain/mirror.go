package toolchain

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/match"

	"kpaas.dev/appliance/internal/atomicfile"
)

// MirrorFile is one plain file of the mirror: Name in MIRROR/files, taken
// from the output File of Component.
type MirrorFile struct {
	Name, Component, File string
}

// MirrorFiles is the literal list of files a node needs outside images.
func MirrorFiles() []MirrorFile {
	return []MirrorFile{
		{"kubeadm", "kube", "kubeadm"},
		{"kubelet", "kube", "kubelet"},
		{"kubectl", "kube", "kubectl"},
		{"containerd", "containerd", "containerd"},
		{"containerd-shim-runc-v2", "containerd", "containerd-shim-runc-v2"},
		{"ctr", "containerd", "ctr"},
		{"runc", "runc", "runc"},
		{"crictl", "crictl", "crictl"},
		{"etcd", "etcd", "etcd"},
		{"etcdctl", "etcd", "etcdctl"},
		{CNITarball, "cni", CNITarball},
	}
}

// writeMirror copies the files and images into mirror. Each file is checked
// first (same size and sha256: left alone) and replaced atomically otherwise;
// each image reference is added to MIRROR/oci only when its index entry is
// missing or names another digest, so re-runs never duplicate entries and
// images other tools put into the same layout are kept.
func writeMirror(mirror string, dirs map[string]string, imgDir string) error {
	files := filepath.Join(mirror, "files")
	if err := os.MkdirAll(files, 0o755); err != nil {
		return err
	}
	var sums bytes.Buffer
	list := MirrorFiles()
	slices.SortFunc(list, func(a, b MirrorFile) int { return strings.Compare(a.Name, b.Name) })
	for _, f := range list {
		m, err := readManifest(dirs[f.Component])
		if err != nil {
			return err
		}
		want := m.Files[f.File]
		if err := syncFile(filepath.Join(dirs[f.Component], f.File), filepath.Join(files, f.Name), want); err != nil {
			return fmt.Errorf("file %s: %w", f.Name, err)
		}
		fmt.Fprintf(&sums, "%s  %s\n", want.SHA256, f.Name)
	}
	sumsPath := filepath.Join(files, "SHA256SUMS")
	if _, err := atomicfile.Update(sumsPath, sums.Bytes(), 0o644); err != nil {
		return err
	}
	return syncImages(filepath.Join(mirror, "oci"), imgDir)
}

func syncFile(src, dest string, want fileInfo) error {
	if st, err := os.Stat(dest); err == nil && st.Size() == want.Size {
		if got, err := hashFile(dest); err == nil && got.SHA256 == want.SHA256 {
			return nil
		}
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return atomicfile.Write(dest, 0o755, func(f *os.File) error {
		_, err := io.Copy(f, in)
		return err
	})
}

func syncImages(dir, imgDir string) error {
	src, err := layout.FromPath(imgDir)
	if err != nil {
		return err
	}
	dst, err := layout.FromPath(dir)
	if err != nil {
		if dst, err = layout.Write(dir, empty.Index); err != nil {
			return err
		}
	}
	idx, err := dst.ImageIndex()
	if err != nil {
		return err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return err
	}
	have := map[string]v1.Hash{}
	for _, d := range im.Manifests {
		have[d.Annotations[RefNameAnnotation]] = d.Digest
	}
	srcIdx, err := src.ImageIndex()
	if err != nil {
		return err
	}
	srcIm, err := srcIdx.IndexManifest()
	if err != nil {
		return err
	}
	var replaced []v1.Hash
	for _, d := range srcIm.Manifests {
		ref := d.Annotations[RefNameAnnotation]
		h, ok := have[ref]
		if ok && h == d.Digest {
			continue
		}
		if ok {
			replaced = append(replaced, h)
		}
		img, err := srcIdx.Image(d.Digest)
		if err != nil {
			return err
		}
		if err := dst.ReplaceImage(img, match.Annotation(RefNameAnnotation, ref), layout.WithAnnotations(d.Annotations)); err != nil {
			return fmt.Errorf("image %s: %w", ref, err)
		}
	}
	if len(replaced) == 0 {
		return nil
	}
	return prune(dir, replaced)
}

// prune removes the blobs of replaced manifests that no manifest reachable
// from index.json still uses. It reads manifests generically (config, layers,
// manifests), so Helm charts and other artifacts in the same layout keep
// their blobs. It must not run while another writer adds to the layout.
func prune(dir string, replaced []v1.Hash) error {
	keep := map[string]bool{}
	if err := references(dir, "index.json", keep); err != nil {
		return err
	}
	for _, h := range replaced {
		if keep[h.String()] {
			continue
		}
		stale := map[string]bool{}
		if err := references(dir, blobPath(h.String()), stale); err != nil {
			if os.IsNotExist(err) { // pruned already (an alias of the same manifest)
				continue
			}
			return err
		}
		stale[h.String()] = true
		for d := range stale {
			if !keep[d] {
				if err := os.Remove(filepath.Join(dir, blobPath(d))); err != nil && !os.IsNotExist(err) {
					return err
				}
			}
		}
	}
	return nil
}

func blobPath(digest string) string {
	alg, hex, _ := strings.Cut(digest, ":")
	return filepath.Join("blobs", alg, hex)
}

// references adds every digest reachable from the manifest or index at rel.
func references(dir, rel string, seen map[string]bool) error {
	data, err := os.ReadFile(filepath.Join(dir, rel))
	if err != nil {
		return err
	}
	var m struct {
		Config    *v1.Descriptor
		Layers    []v1.Descriptor
		Manifests []v1.Descriptor
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return nil // not a manifest: a leaf
	}
	if m.Config != nil {
		seen[m.Config.Digest.String()] = true
	}
	for _, l := range m.Layers {
		seen[l.Digest.String()] = true
	}
	for _, c := range m.Manifests {
		d := c.Digest.String()
		if seen[d] {
			continue
		}
		seen[d] = true
		if err := references(dir, blobPath(d), seen); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	return nil
}
