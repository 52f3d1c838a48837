package osimage

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"

	"kpaas.dev/appliance/agent"
	"kpaas.dev/appliance/builder/initramfs"
	"kpaas.dev/appliance/internal/atomicfile"
	"kpaas.dev/appliance/internal/bundle"
)

func stepInitramfs(ctx context.Context, st *state) error {
	st.initrd = filepath.Join(st.tmp, InitrdFile)
	f, err := os.Create(st.initrd)
	if err != nil {
		return err
	}
	defer f.Close()
	// zstd (the kernel unpacks it: CONFIG_RD_ZSTD) shrinks the archive from
	// about 11.5 MB to under 3 MB; the media store it twice (ISO: BIOS tree
	// and EFI image). One encoder thread keeps the bytes reproducible.
	zw, err := zstd.NewWriter(f, zstd.WithEncoderLevel(zstd.SpeedBestCompression), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return err
	}
	if _, err := initramfs.Write(zw, initramfs.Options{
		Init:          st.init,
		ModulesDir:    st.base.ModulesPath(),
		KernelRelease: st.base.KernelRelease,
	}); err != nil {
		zw.Close()
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return f.Close()
}

// stepNodeLayer writes the node layer: what kpaas adds to the base.
func stepNodeLayer(ctx context.Context, st *state) error {
	agentBin, err := os.ReadFile(st.agent)
	if err != nil {
		return err
	}
	initrd, err := os.ReadFile(st.initrd)
	if err != nil {
		return err
	}
	st.node, err = writeLayer(filepath.Join(st.tmp, "node.tar.gz"), func(t *tarWriter) error {
		entries := []struct {
			name string
			add  func(string) error
		}{
			{"boot", t.dir},
			{"boot/kpaas", t.dir},
			{InitrdPath, func(n string) error { return t.file(n, 0o644, initrd) }},
			{"etc", t.dir},
			{"etc/systemd", t.dir},
			{"etc/systemd/system", t.dir},
			{AgentUnitPath, func(n string) error { return t.file(n, 0o644, agent.Unit) }},
			{path.Dir(AgentWantsPath), t.dir},
			{AgentWantsPath, func(n string) error { return t.symlink(n, "/"+AgentUnitPath) }},
			{RenewUnitPath, func(n string) error { return t.file(n, 0o644, agent.RenewService) }},
			{RenewTimerPath, func(n string) error { return t.file(n, 0o644, agent.RenewTimer) }},
			{path.Dir(RenewWantsPath), t.dir},
			{RenewWantsPath, func(n string) error { return t.symlink(n, "/"+RenewTimerPath) }},
			{"usr", t.dir},
			{"usr/bin", t.dir},
			{AgentPath, func(n string) error { return t.file(n, 0o755, agentBin) }},
		}
		for _, e := range entries {
			if err := e.add(e.name); err != nil {
				return err
			}
		}
		return nil
	}, st.opts.Epoch)
	return err
}

// stepImage writes the layers, config and manifest into the layout and
// adds (or replaces) the image's entry in index.json.
func stepImage(ctx context.Context, st *state) error {
	store, err := bundle.Create(st.out)
	if err != nil {
		return err
	}
	w := store.NewWriter()
	created := v1.Time{Time: time.Unix(st.opts.Epoch, 0).UTC()}
	layers := []struct {
		l       Layer
		file    string
		comment string
	}{
		{st.base.Layer, filepath.Join(st.base.Dir, st.base.Layer.File), fmt.Sprintf("mmdebstrap %s %s (%d packages)", st.def.Suite, st.def.Mirror, len(st.base.Packages))},
		{st.node, filepath.Join(st.tmp, st.node.File), "kpaas-agent, its unit, the kpaas initramfs"},
	}
	cfg := v1.ConfigFile{
		Architecture: st.def.Architecture,
		OS:           "linux",
		Created:      created,
		RootFS:       v1.RootFS{Type: "layers"},
		Config: v1.Config{
			Env:    []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
			Cmd:    []string{"/sbin/init"},
			Labels: map[string]string{"org.opencontainers.image.title": st.def.Metadata.Name, "org.opencontainers.image.version": st.def.Metadata.Version},
		},
	}
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		Annotations: map[string]string{
			"org.opencontainers.image.title":       st.def.Metadata.Name,
			"org.opencontainers.image.version":     st.def.Metadata.Version,
			"org.opencontainers.image.description": st.def.Metadata.Description,
			"org.opencontainers.image.created":     created.Format(time.RFC3339),
			AnnotationKernelRelease:                st.base.KernelRelease,
			AnnotationKernel:                       st.base.Kernel,
			AnnotationInitrd:                       InitrdPath,
			AnnotationCmdline:                      DefaultCmdline,
		},
	}
	for _, l := range layers {
		h, err := v1.NewHash(l.l.Digest)
		if err != nil {
			return err
		}
		diffID, err := v1.NewHash(l.l.DiffID)
		if err != nil {
			return err
		}
		file := l.file
		if err := w.WriteStream(h, l.l.Size, func() (io.ReadCloser, error) { return os.Open(file) }); err != nil {
			return err
		}
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, diffID)
		cfg.History = append(cfg.History, v1.History{Created: created, CreatedBy: "kpaas os build", Comment: l.comment})
		m.Layers = append(m.Layers, v1.Descriptor{MediaType: types.OCILayer, Digest: h, Size: l.l.Size})
	}
	cfgJSON, err := json.Marshal(&cfg)
	if err != nil {
		return err
	}
	ch, csize, err := w.WriteBytes(cfgJSON)
	if err != nil {
		return err
	}
	m.Config = v1.Descriptor{MediaType: types.OCIConfigJSON, Digest: ch, Size: csize}
	raw, err := json.Marshal(&m)
	if err != nil {
		return err
	}
	mh, msize, err := w.WriteBytes(raw)
	if err != nil {
		return err
	}
	desc := bundle.Annotate(v1.Descriptor{
		MediaType: types.OCIManifestSchema1, Digest: mh, Size: msize,
		Platform: &v1.Platform{OS: "linux", Architecture: st.def.Architecture},
	}, bundle.KindOS, st.res.Ref)
	entries, err := store.Entries()
	if err != nil {
		return err
	}
	keep := []v1.Descriptor{desc}
	for _, e := range entries {
		if e.Ref != st.res.Ref {
			keep = append(keep, e.Descriptor)
		}
	}
	if err := store.SetEntries(keep); err != nil {
		return err
	}
	st.res.Digest = mh.String()
	st.opts.logf("os: %s@%s (%d MB base, %d MB node)", st.res.Ref, mh, st.base.Layer.Size>>20, st.node.Size>>20)
	return nil
}

// stepBootFiles copies the kernel and the initramfs beside the layout, in
// boot/ (QEMU tests and direct boots read them there). The mirror lookup
// ignores the folder: it holds no layout or tarball.
func stepBootFiles(ctx context.Context, st *state) error {
	dir := filepath.Join(st.out, "boot")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	copies := []struct{ src, dst string }{
		{st.base.VmlinuzPath(), filepath.Join(dir, "vmlinuz")},
		{st.initrd, filepath.Join(dir, InitrdFile)},
	}
	if _, err := os.Stat(st.base.VmlinuxPath()); err == nil {
		copies = append(copies, struct{ src, dst string }{st.base.VmlinuxPath(), filepath.Join(dir, "vmlinux")})
	}
	for _, c := range copies {
		b, err := os.ReadFile(c.src)
		if err != nil {
			return err
		}
		if err := atomicfile.WriteFile(c.dst, b, 0o644); err != nil {
			return err
		}
	}
	st.res.Vmlinuz = filepath.Join(dir, "vmlinuz")
	st.res.Initrd = filepath.Join(dir, InitrdFile)
	if len(copies) == 3 {
		st.res.Vmlinux = filepath.Join(dir, "vmlinux")
	}
	return nil
}
