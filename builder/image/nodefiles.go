package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"kpaas.dev/appliance/api/bundle/v1alpha1"
	"kpaas.dev/appliance/internal/bundle"
)

// NodeFile is a file artifact of the bundle put into the root file system
// at its target: the node boots with its toolchain (kubeadm, kubelet,
// containerd, …) in place.
type NodeFile struct {
	Ref     string `json:"ref"` // the file artifact, e.g. kpaas.local/files/kubelet:v1.35.4
	Name    string `json:"name"`
	Version string `json:"version,omitempty"`
	Target  string `json:"target"`
	Mode    string `json:"mode"` // octal, e.g. "0755"
	Size    int64  `json:"size"`
	Digest  string `json:"digest"` // the file's blob
}

// nodeFile is a file artifact read from the bundle.
type nodeFile struct {
	NodeFile
	blob v1.Descriptor // the file's bytes
	perm int64
}

// nodeFiles puts every file artifact that has a target into the root
// tree, at its target with its mode, owned by root, with the build's
// time. The content is read through verifying readers. Files without a
// target are listed in the summary and stay only in the bundle.
func (b *build) nodeFiles(ctx context.Context) error {
	entries, err := b.store.Entries()
	if err != nil {
		return err
	}
	var files []nodeFile
	var errs []error
	targets := map[string]string{} // cleaned target → artifact
	for _, e := range entries {
		if e.Kind != bundle.KindFile {
			continue
		}
		f, err := b.readNodeFile(e)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("file %s: %w", e.Ref, err))
		case f.Target == "":
			b.sum.NoTargetFiles = append(b.sum.NoTargetFiles, e.Ref)
		case targets[path.Clean(f.Target)] != "":
			errs = append(errs, fmt.Errorf("file %s: target %s is also the target of %s", e.Ref, f.Target, targets[path.Clean(f.Target)]))
		default:
			targets[path.Clean(f.Target)] = e.Ref
			files = append(files, f)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := b.addNodeFile(f); err != nil {
			return fmt.Errorf("file %s: %w", f.Ref, err)
		}
		b.sum.NodeFiles = append(b.sum.NodeFiles, f.NodeFile)
	}
	return nil
}

// readNodeFile reads a file artifact's manifest: one layer (the bytes)
// and the annotations that give its name, version, mode and target.
func (b *build) readNodeFile(e bundle.Entry) (nodeFile, error) {
	raw, err := b.store.ReadManifest(e.Descriptor)
	if err != nil {
		return nodeFile{}, err
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return nodeFile{}, fmt.Errorf("manifest %s: %w", e.Descriptor.Digest, err)
	}
	if len(m.Layers) != 1 {
		return nodeFile{}, fmt.Errorf("manifest %s has %d layers; a file artifact has one", e.Descriptor.Digest, len(m.Layers))
	}
	a := m.Annotations
	f := nodeFile{blob: m.Layers[0], NodeFile: NodeFile{Ref: e.Ref, Name: a[bundle.AnnotationTitle],
		Version: a[bundle.AnnotationVersion], Target: a[bundle.AnnotationFileTarget], Mode: a[bundle.AnnotationFileMode],
		Size: m.Layers[0].Size, Digest: m.Layers[0].Digest.String()}}
	if f.Mode == "" {
		f.Mode = v1alpha1.DefaultFileMode
	}
	perm, err := strconv.ParseUint(f.Mode, 8, 32)
	if err != nil || perm > 0o7777 {
		return nodeFile{}, fmt.Errorf("mode %q (%s) is not an octal file mode like \"0755\"", f.Mode, bundle.AnnotationFileMode)
	}
	f.perm, f.Mode = int64(perm), fmt.Sprintf("%04o", perm)
	if t := f.Target; t != "" && (!path.IsAbs(t) || path.Clean(t) == "/" || slices.Contains(strings.Split(t, "/"), "..")) {
		return nodeFile{}, fmt.Errorf("target %q (%s) is not an absolute file path without \"..\"", t, bundle.AnnotationFileTarget)
	}
	return f, nil
}

// addNodeFile copies a file's blob into the root tree, verified as it is
// read: a digest mismatch fails the build.
func (b *build) addNodeFile(f nodeFile) error {
	rc, err := b.store.OpenBlob(f.blob.Digest, f.blob.Size)
	if err != nil {
		return err
	}
	defer rc.Close()
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: f.Target, Mode: f.perm, Size: f.blob.Size, ModTime: b.time}
	return b.tree.AddFile(hdr, rc)
}
