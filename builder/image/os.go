package image

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"kpaas.dev/appliance/builder/disk/squashfs"
	"kpaas.dev/appliance/builder/osimage"
	"kpaas.dev/appliance/internal/bundle"
)

// osManifest is the OS image's manifest, with what the media need from it.
type osManifest struct {
	digest      v1.Hash
	layers      []v1.Descriptor
	annotations map[string]string
	kernel      string // path inside the image
	initrd      string
	cmdline     string
}

// verify checks every blob's digest, SHA256SUMS, the lock and, with a
// key, the signature.
func (b *build) verify(ctx context.Context) error {
	s, err := bundle.Open(b.o.Bundle)
	if err != nil {
		return err
	}
	b.store = s
	if _, err := s.Verify(ctx, bundle.VerifyOptions{PublicKey: b.o.PublicKey}); err != nil {
		return fmt.Errorf("bundle %s: %w", b.o.Bundle, err)
	}
	return nil
}

// findOS finds the entry of kind os and reads its manifest's annotations.
func (b *build) findOS(ctx context.Context) error {
	entries, err := b.store.Entries()
	if err != nil {
		return err
	}
	var found []bundle.Entry
	for _, e := range entries {
		if e.Kind == bundle.KindOS {
			found = append(found, e)
		}
	}
	switch len(found) {
	case 0:
		return fmt.Errorf("bundle %s has %w (os.image in the manifest)", b.o.Bundle, ErrNoOS)
	case 1:
	default:
		return fmt.Errorf("bundle %s has %d OS images; the media boot one", b.o.Bundle, len(found))
	}
	b.osEntry = found[0]
	b.sum.OS = b.osEntry.Ref
	d, err := b.platformManifest(b.osEntry.Descriptor)
	if err != nil {
		return fmt.Errorf("OS image %s: %w", b.osEntry.Ref, err)
	}
	raw, err := b.store.ReadManifest(d)
	if err != nil {
		return err
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return fmt.Errorf("OS image %s: %w", b.osEntry.Ref, err)
	}
	om := &osManifest{digest: d.Digest, layers: m.Layers, annotations: m.Annotations,
		kernel:  strings.TrimPrefix(m.Annotations[osimage.AnnotationKernel], "/"),
		initrd:  strings.TrimPrefix(m.Annotations[osimage.AnnotationInitrd], "/"),
		cmdline: m.Annotations[osimage.AnnotationCmdline],
	}
	var missing []string
	for _, a := range []struct{ key, val string }{{osimage.AnnotationKernel, om.kernel}, {osimage.AnnotationInitrd, om.initrd}} {
		if a.val == "" {
			missing = append(missing, a.key)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("OS image %s: its manifest has no %s annotation (was it built by kpaas os build?)", b.osEntry.Ref, strings.Join(missing, " or "))
	}
	if len(om.layers) == 0 {
		return fmt.Errorf("OS image %s has no layers", b.osEntry.Ref)
	}
	for _, l := range om.layers {
		if !strings.Contains(string(l.MediaType), "tar") {
			return fmt.Errorf("OS image %s: layer %s has media type %s, not a tar", b.osEntry.Ref, l.Digest, l.MediaType)
		}
	}
	if om.cmdline == "" {
		om.cmdline = osimage.DefaultCmdline
	}
	b.manifest = om
	b.sum.OSDigest = d.Digest.String()
	b.sum.KernelRelease = m.Annotations[osimage.AnnotationKernelRelease]
	b.time = b.buildTime()
	b.sum.Time = b.time
	return nil
}

// platformManifest is d, or for an index its linux/amd64 image.
func (b *build) platformManifest(d v1.Descriptor) (v1.Descriptor, error) {
	if !bundle.IsIndex(d.MediaType) {
		return d, nil
	}
	raw, err := b.store.ReadManifest(d)
	if err != nil {
		return d, err
	}
	im, err := v1.ParseIndexManifest(bytes.NewReader(raw))
	if err != nil {
		return d, err
	}
	for _, m := range im.Manifests {
		if m.Platform != nil && m.Platform.OS == "linux" && m.Platform.Architecture == "amd64" {
			return m, nil
		}
	}
	return d, fmt.Errorf("index %s has no linux/amd64 image", d.Digest)
}

// readLayers applies the OS image's layers, each read through a verifying
// reader, spooling file contents into the work folder.
func (b *build) readLayers(ctx context.Context) error {
	var layers []squashfs.Layer
	for _, l := range b.manifest.layers {
		layers = append(layers, func() (io.ReadCloser, error) { return b.store.OpenBlob(l.Digest, l.Size) })
	}
	t, err := squashfs.ReadLayers(ctx, layers, squashfs.LayerOptions{TempDir: b.work})
	if err != nil {
		return fmt.Errorf("OS image %s: %w", b.osEntry.Ref, err)
	}
	b.tree = t
	return nil
}
