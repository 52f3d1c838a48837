package image

import (
	"context"
	"fmt"
	"os"
	"path"
	"sort"
	"strings"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"kpaas.dev/appliance/builder/disk"
	"kpaas.dev/appliance/builder/disk/qcow2"
	"kpaas.dev/appliance/builder/disk/squashfs"
	"kpaas.dev/appliance/internal/bundle"
)

// bundleSet decides what KPAAS-BUNDLE holds: the bundle's metadata files
// and every blob index.json reaches, except (unless KeepOSLayers) the
// blobs whose content the root squashfs holds already and that no other
// artifact uses: the OS image's layers and the bytes of the node files
// put at their targets. Unreferenced blobs are left out, as export does.
func (b *build) bundleSet(ctx context.Context) error {
	entries, err := b.store.Entries()
	if err != nil {
		return err
	}
	inRoot := map[string]bool{} // file artifacts in the root
	for _, f := range b.sum.NodeFiles {
		inRoot[f.Ref] = true
	}
	others := map[v1.Hash]bool{}
	rootBlobs := map[v1.Hash]int64{}
	for _, e := range entries {
		err := b.store.Walk(e.Descriptor, func(n bundle.Node) error {
			mt := string(n.Descriptor.MediaType)
			layer := strings.Contains(mt, "layer") || strings.Contains(mt, "tar")
			if e.Kind == bundle.KindOS && layer || e.Kind == bundle.KindFile && inRoot[e.Ref] && mt == bundle.FileLayerMediaType {
				rootBlobs[n.Descriptor.Digest] = n.Descriptor.Size
			} else {
				others[n.Descriptor.Digest] = true
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("%s %s: %w", e.Kind, e.Ref, err)
		}
	}
	keep := map[string]bool{bundle.BlobsDir: true, bundle.BlobsDir + "/sha256": true}
	for _, f := range bundle.ExportedFiles {
		keep[f] = true
	}
	blobRel := func(h v1.Hash) string { return path.Join(bundle.BlobsDir, h.Algorithm, h.Hex) }
	for h := range others {
		keep[blobRel(h)] = true
	}
	for h, size := range rootBlobs {
		if b.o.KeepOSLayers || others[h] {
			keep[blobRel(h)] = true
			continue
		}
		b.sum.BundleOmitted = append(b.sum.BundleOmitted, h.String())
		b.sum.OmittedBytes += size
	}
	sort.Strings(b.sum.BundleOmitted)
	b.keep = keep
	so := squashfs.Options{
		Compression: squashfs.None, // the blobs are compressed already
		ModTime:     b.time,
		Exclude:     func(rel string) bool { return !b.keep[rel] },
	}
	if !b.wants(disk.Raw) || !b.wants(disk.ISO) {
		// One medium: it packs the folder itself (raw: straight into
		// its partition, no temp file).
		b.layout.Bundle = disk.Payload{Dir: b.o.Bundle, Squashfs: so}
		return nil
	}
	// Raw and ISO both carry the bundle: pack it once, copy it twice.
	img := b.path("bundle.squashfs")
	if _, err := squashfs.WriteFile(ctx, img, b.o.Bundle, so); err != nil {
		return fmt.Errorf("packing the bundle: %w", err)
	}
	b.layout.Bundle = disk.Payload{Image: img}
	return nil
}

// wants reports whether format f was asked for.
func (b *build) wants(f disk.Format) bool {
	for _, x := range b.o.Formats {
		if x == f {
			return true
		}
	}
	return false
}

// write writes one format into the work folder. qcow2 is converted from
// the raw image when that was written too.
func (b *build) write(ctx context.Context, f disk.Format) error {
	start := time.Now()
	out := b.path("media." + string(f))
	opts := []disk.Option{disk.WithTime(b.time)}
	if b.o.Seed != "" {
		opts = append(opts, disk.WithSeed(b.o.Seed))
	}
	if b.syslinux != nil {
		opts = append(opts, disk.WithSyslinux(*b.syslinux))
	}
	if f == disk.QCOW2 && len(b.outputs) > 0 && b.outputs[0].Format == disk.Raw {
		raw := b.outputs[0]
		st, err := qcow2.ConvertFile(ctx, raw.Path, out, qcow2.Options{})
		if err != nil {
			return err
		}
		o := raw
		o.Format, o.Path, o.Size, o.Allocated, o.Duration = disk.QCOW2, out, st.FileSize, allocated(out), time.Since(start)
		b.outputs = append(b.outputs, o)
		return nil
	}
	sum, err := disk.Write(ctx, f, b.layout, out, opts...)
	if err != nil {
		return err
	}
	b.outputs = append(b.outputs, Output{Format: f, Path: out, Size: sum.Size, Allocated: sum.Allocated,
		DiskGUID: sum.DiskGUID, Firmware: sum.Firmware, Partitions: sum.Partitions, Install: sum.Install, Duration: time.Since(start)})
	return nil
}

// publish renames every output into place, or none when one fails.
func (b *build) publish(ctx context.Context) error {
	var done []string
	for i := range b.outputs {
		o := &b.outputs[i]
		dst := OutputPath(b.o.Out, o.Format)
		if err := os.Rename(o.Path, dst); err != nil {
			for _, d := range done {
				os.Remove(d)
			}
			return err
		}
		done = append(done, dst)
		o.Path = dst
	}
	b.sum.Outputs = b.outputs
	return nil
}

func allocated(p string) int64 {
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		return 0
	}
	return st.Blocks * 512
}
