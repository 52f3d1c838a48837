package bake

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sync/errgroup"
	"helm.sh/helm/v3/pkg/chart/loader"
	"sigs.k8s.io/yaml"

	"kpaas.dev/appliance/api/bundle/v1alpha1"
	"kpaas.dev/appliance/builder/charts"
	"kpaas.dev/appliance/builder/source"
	"kpaas.dev/appliance/internal/bundle"
	"kpaas.dev/appliance/internal/platform"
	"kpaas.dev/appliance/internal/progress"
	"kpaas.dev/appliance/internal/ref"
)

// entry is one top-level artifact written to the bundle.
type entry struct {
	desc v1.Descriptor // annotated
	lock bundle.LockArtifact
}

type chartArtifact struct {
	spec    v1alpha1.Chart
	order   int
	values  map[string]any
	images  []charts.ImageRef
	fetched *source.Chart
}

type imageArtifact struct {
	ref       ref.Ref
	kind      bundle.Kind
	platforms []string
	fromChart []string // charts that need it (empty: listed in the manifest)
	resolved  *source.Image
}

// loadManifest parses the manifest and opens the sources and the bundle.
func loadManifest(ctx context.Context, st *state) error {
	data, err := os.ReadFile(st.opts.Manifest)
	if err != nil {
		return err
	}
	m, err := v1alpha1.Parse(st.opts.Manifest, data)
	if err != nil {
		return err
	}
	st.manifest = m
	sum := sha256.Sum256(data)
	st.digest = "sha256:" + hex.EncodeToString(sum[:])

	var chain source.Chain
	var mirrors source.Mirrors
	for _, dir := range st.opts.Mirrors {
		mirrors = append(mirrors, &source.Mirror{Dir: dir})
	}
	if len(mirrors) > 0 {
		chain = append(chain, mirrors)
	}
	if !st.opts.Offline {
		reg := st.opts.Registry
		chain = append(chain, &reg)
	}
	st.images = chain
	st.fetch = &source.Fetcher{
		BaseDir:   filepath.Dir(st.opts.Manifest),
		Mirror:    mirrors,
		Offline:   st.opts.Offline,
		Images:    chain,
		ChartTime: st.opts.Epoch,
	}
	st.store, err = bundle.Create(st.opts.Out)
	if err != nil {
		return err
	}
	n, size, err := st.store.RemoveTemp()
	if err != nil {
		return err
	}
	if n > 0 {
		st.opts.Progress.Printf("removed %d temp file(s) (%s) left by an interrupted bake", n, progress.Bytes(size))
	}
	jobs := st.opts.Jobs
	if jobs <= 0 {
		jobs = 4
	}
	st.bar = st.opts.Progress.Bar("blobs", 0)
	st.writer = st.store.NewWriter(bundle.WithJobs(jobs), bundle.WithBlobEvents(func(e bundle.BlobEvent) {
		if e.Written {
			st.bar.Add(e.Size)
		}
	}))
	st.opts.Progress.Printf("bundle %s %s: %d images, %d charts, %d files", m.Metadata.Name, m.Metadata.Version, len(m.Images), len(m.Charts), len(m.Files))
	return nil
}

// fetchCharts fetches, stores and renders every chart, in manifest order.
func fetchCharts(ctx context.Context, st *state) error {
	var errs []error
	for i, spec := range st.manifest.Charts {
		c, err := st.chart(ctx, i, spec)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		st.charts = append(st.charts, c)
	}
	return errors.Join(errs...)
}

func (st *state) chart(ctx context.Context, order int, spec v1alpha1.Chart) (*chartArtifact, error) {
	f, err := st.fetch.FetchChart(ctx, spec)
	if err != nil {
		return nil, err
	}
	ch, err := loader.LoadArchive(bytes.NewReader(f.Archive))
	if err != nil {
		return nil, fmt.Errorf("chart %q: loading %s: %w", spec.Name, f.Source, err)
	}
	if ch.Name() != spec.Name {
		return nil, fmt.Errorf("chart %q: %s holds chart %q", spec.Name, f.Source, ch.Name())
	}
	if spec.Version != "" && ch.Metadata.Version != spec.Version {
		return nil, fmt.Errorf("chart %q: %s has version %s, the manifest asks for %s", spec.Name, f.Source, ch.Metadata.Version, spec.Version)
	}
	f.Version = ch.Metadata.Version
	if f.Ref == "" {
		f.Ref = source.ChartRefRegistry + "/" + spec.Name + ":" + f.Version
	}
	values, err := st.values(spec)
	if err != nil {
		return nil, err
	}
	objs, err := charts.Render(ch, charts.RenderOptions{
		ReleaseName: spec.Release,
		Namespace:   spec.Namespace,
		Values:      st.renderValues(spec, values),
		KubeVersion: st.manifest.Kubernetes.Version,
	})
	if err != nil {
		return nil, err
	}
	images, err := charts.Images(ch, objs)
	if err != nil {
		return nil, fmt.Errorf("chart %q: %w", spec.Name, err)
	}
	return &chartArtifact{spec: spec, order: order, values: values, images: images, fetched: f}, nil
}

// renderValues are the values the chart is rendered with to find its
// images: its own, and those of the platform release that installs it (a
// chart may require a value only the release gives, a password). The
// release's facts and secrets are the site's, unknown at bake time: they
// render as the bundle's declared fact defaults or as placeholders.
func (st *state) renderValues(spec v1alpha1.Chart, values map[string]any) map[string]any {
	p := st.manifest.Platform
	if p == nil {
		return values
	}
	for _, r := range p.Releases {
		if r.Chart != spec.Release || len(r.Values) == 0 {
			continue
		}
		expanded, err := platform.ExpandValues(r.Values, func(kind, name string) (string, bool) {
			if v := p.Facts[name]; kind == "fact" && v != "" {
				return v, true
			}
			return "kpaas-bake-" + kind + "-" + name, true
		})
		if err != nil { // the lookup answers everything
			return values
		}
		out := map[string]any{}
		merge(out, values)
		merge(out, expanded)
		return out
	}
	return values
}

// values merges the chart's valuesFiles, in order, then its inline values.
func (st *state) values(spec v1alpha1.Chart) (map[string]any, error) {
	out := map[string]any{}
	for _, vf := range spec.ValuesFiles {
		p := vf
		if !filepath.IsAbs(p) {
			p = filepath.Join(filepath.Dir(st.opts.Manifest), vf)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("chart %q: valuesFiles: %w", spec.Name, err)
		}
		var v map[string]any
		if err := yaml.Unmarshal(b, &v); err != nil {
			return nil, fmt.Errorf("chart %q: valuesFiles: %s: %w", spec.Name, p, err)
		}
		merge(out, v)
	}
	merge(out, spec.Values)
	return out, nil
}

// merge deep-merges src into dst; maps merge, everything else replaces.
func merge(dst, src map[string]any) {
	for k, v := range src {
		if sm, ok := v.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				merge(dm, sm)
				continue
			}
			cp := map[string]any{}
			merge(cp, sm)
			dst[k] = cp
			continue
		}
		dst[k] = v
	}
}

// resolveImages pins every image: those the manifest lists, the OS image,
// and every image a chart needs that is not excluded.
func resolveImages(ctx context.Context, st *state) error {
	m := st.manifest
	byRef := map[string]*imageArtifact{}
	var order []*imageArtifact
	add := func(s string, kind bundle.Kind, platforms []string, chart string) error {
		r, err := ref.Parse(s)
		if err != nil {
			return err
		}
		a, ok := byRef[r.String()]
		if !ok {
			if len(platforms) == 0 {
				platforms = m.Platforms
			}
			a = &imageArtifact{ref: r, kind: kind, platforms: platforms}
			byRef[r.String()] = a
			order = append(order, a)
		}
		if chart != "" {
			a.fromChart = append(a.fromChart, chart)
		}
		return nil
	}
	var errs []error
	for i, img := range m.Images {
		if err := add(img.Ref, bundle.KindImage, img.Platforms, ""); err != nil {
			errs = append(errs, fmt.Errorf("images[%d]: %w", i, err))
		}
	}
	if m.OS != nil {
		if err := add(m.OS.Image, bundle.KindOS, nil, ""); err != nil {
			errs = append(errs, fmt.Errorf("os.image: %w", err))
		}
	}
	for _, c := range st.charts {
		for _, img := range c.images {
			if _, listed := byRef[img.Ref]; !listed && excluded(m.Exclude, img.Ref) {
				continue
			}
			if err := add(img.Ref, bundle.KindImage, nil, "chart "+c.spec.Name); err != nil {
				errs = append(errs, fmt.Errorf("chart %q: image %s: %w", c.spec.Name, img.Ref, err))
			}
		}
	}
	for _, r := range st.platform {
		for _, img := range r.images {
			if _, listed := byRef[img]; !listed && excluded(m.Exclude, img) {
				continue
			}
			if err := add(img, bundle.KindImage, nil, "release "+r.spec.Name); err != nil {
				errs = append(errs, fmt.Errorf("platform release %q: image %s: %w", r.spec.Name, img, err))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}

	// Resolve with ctx, not the group's context: the resolved images fetch
	// lazily, later, with the context they were resolved with.
	// Every image is tried, whatever happens to the others: images that
	// are not there and images whose source failed (no such host, refused,
	// 401, …) are all listed together.
	var g errgroup.Group
	g.SetLimit(8)
	var mu sync.Mutex
	var missing, failed []string
	for _, a := range order {
		g.Go(func() error {
			img, err := st.images.Resolve(ctx, a.ref)
			if err == nil {
				a.resolved = img
				return nil
			}
			name := a.ref.String()
			if len(a.fromChart) > 0 {
				name = fmt.Sprintf("%s (needed by %s)", a.ref, strings.Join(a.fromChart, ", "))
			}
			mu.Lock()
			defer mu.Unlock()
			if errors.Is(err, source.ErrNotFound) {
				missing = append(missing, name)
			} else {
				failed = append(failed, name+": "+strings.TrimPrefix(err.Error(), "resolving "+a.ref.String()+" "))
			}
			return nil
		})
	}
	g.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(missing)+len(failed) > 0 {
		sort.Strings(missing)
		sort.Strings(failed)
		var b strings.Builder
		fmt.Fprintf(&b, "%d of %d images could not be resolved (%s)", len(missing)+len(failed), len(order), st.images)
		if len(missing) > 0 {
			fmt.Fprintf(&b, "\n%d not found; add them to the mirror or registry, or list chart images under exclude: with a reason:\n  %s",
				len(missing), strings.Join(missing, "\n  "))
		}
		if len(failed) > 0 {
			fmt.Fprintf(&b, "\n%d failed (network, credentials, registry errors):\n  %s", len(failed), strings.Join(failed, "\n  "))
		}
		return errors.New(b.String())
	}
	st.resolved = order
	for _, a := range order {
		if len(a.fromChart) > 0 && !listed(m, a.ref) {
			st.summary.ChartImages++
		}
	}
	return nil
}

func listed(m *v1alpha1.Bundle, r ref.Ref) bool {
	for _, img := range m.Images {
		if x, err := ref.Parse(img.Ref); err == nil && x == r {
			return true
		}
	}
	return false
}

// excluded reports whether an exclude entry matches the reference (exactly,
// after normalisation, or as a path.Match pattern).
func excluded(ex []v1alpha1.Exclude, r string) bool {
	for _, e := range ex {
		if n, err := ref.Normalize(e.Image); err == nil && n == r {
			return true
		}
		if ok, _ := path.Match(e.Image, r); ok {
			return true
		}
	}
	return false
}

// writeImages copies every resolved image (and the charts) into the layout.
func writeImages(ctx context.Context, st *state) error {
	defer st.bar.Finish()
	for _, c := range st.charts {
		e, err := st.writeChart(ctx, c)
		if err != nil {
			return err
		}
		st.entries = append(st.entries, e)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	entries := make([]entry, len(st.resolved))
	for i, a := range st.resolved {
		g.Go(func() error {
			e, err := st.writeImage(gctx, a)
			if err != nil {
				return fmt.Errorf("%s %s: %w", a.kind, a.ref, err)
			}
			entries[i] = e
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	st.entries = append(st.entries, entries...)
	return nil
}

func (st *state) writeImage(ctx context.Context, a *imageArtifact) (entry, error) {
	var desc v1.Descriptor
	var err error
	var platforms []string
	if a.resolved.Index != nil {
		// A reference pinned by digest names the upstream index: it is kept
		// whole (every platform), so a pull by that digest gets exactly
		// those bytes from the seed, from Harbor and from containerd.
		pinned := a.ref.Digest != ""
		desc, err = st.writer.WriteIndex(ctx, a.resolved.Index, func(d v1.Descriptor) bool {
			if pinned && d.Platform != nil {
				platforms = append(platforms, d.Platform.String())
			}
			if pinned {
				return true
			}
			if d.Platform == nil || !matchPlatform(a.platforms, d.Platform) {
				return false
			}
			platforms = append(platforms, d.Platform.String())
			return true
		})
	} else {
		desc, err = st.writer.WriteImage(ctx, a.resolved.Image)
		if err == nil {
			platforms = st.platformOf(desc)
		}
	}
	if err != nil {
		return entry{}, err
	}
	sort.Strings(platforms)
	la := bundle.LockArtifact{
		Kind:      a.kind,
		Ref:       a.ref.String(),
		Digest:    desc.Digest.String(),
		MediaType: string(desc.MediaType),
		Source:    a.resolved.Source,
		Platforms: platforms,
	}
	if sd := desc.Annotations[bundle.AnnotationSourceDigest]; sd != "" {
		la.SourceDigest = sd
	}
	if cf := st.configOf(desc); cf != nil {
		// Provenance an image was built with (the toolchain's Harbor images
		// carry their sources' repository and commit): into the SBOM.
		la.SourceRepository = cf.Config.Labels[ocispecSource]
		la.SourceRevision = cf.Config.Labels[ocispecRevision]
	}
	return entry{desc: bundle.Annotate(desc, a.kind, a.ref.String()), lock: la}, nil
}

// The OCI annotation keys of an image's sources, as config labels.
const (
	ocispecSource   = "org.opencontainers.image.source"
	ocispecRevision = "org.opencontainers.image.revision"
)

// platformOf reads a stored image's platform from its config (from the
// bundle, so a re-bake fetches nothing). Images without one give nil.
func (st *state) platformOf(d v1.Descriptor) []string {
	cf := st.configOf(d)
	if cf == nil || cf.OS == "" {
		return nil
	}
	return []string{cf.Platform().String()}
}

// configOf reads a stored image manifest's config, or nil (an index, an
// artifact without an image config).
func (st *state) configOf(d v1.Descriptor) *v1.ConfigFile {
	raw, err := st.store.ReadManifest(d)
	if err != nil {
		return nil
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return nil
	}
	b, err := st.store.ReadBlob(m.Config.Digest)
	if err != nil {
		return nil
	}
	cf, err := v1.ParseConfigFile(bytes.NewReader(b))
	if err != nil {
		return nil
	}
	return cf
}

// matchPlatform reports whether p is one of the wanted "os/arch[/variant]".
func matchPlatform(want []string, p *v1.Platform) bool {
	for _, w := range want {
		wp, err := v1.ParsePlatform(w)
		if err != nil {
			continue
		}
		if wp.OS == p.OS && wp.Architecture == p.Architecture && (wp.Variant == "" || wp.Variant == p.Variant) {
			return true
		}
	}
	return false
}

func (st *state) writeChart(ctx context.Context, c *chartArtifact) (entry, error) {
	f := c.fetched
	var desc v1.Descriptor
	if f.OCI != nil && f.OCI.Image != nil {
		d, err := st.writer.WriteImage(ctx, f.OCI.Image)
		if err != nil {
			return entry{}, fmt.Errorf("chart %q: %w", c.spec.Name, err)
		}
		desc = d
	} else {
		ch, err := loader.LoadArchive(bytes.NewReader(f.Archive))
		if err != nil {
			return entry{}, err
		}
		cfg, err := json.Marshal(ch.Metadata)
		if err != nil {
			return entry{}, err
		}
		ch256, chSize, err := st.writer.WriteBytes(cfg)
		if err != nil {
			return entry{}, err
		}
		l256, lSize, err := st.writer.WriteBytes(f.Archive)
		if err != nil {
			return entry{}, err
		}
		raw, err := bundle.ChartManifest(
			v1.Descriptor{Digest: ch256, Size: chSize},
			v1.Descriptor{Digest: l256, Size: lSize},
			ch.Name(), ch.Metadata.Version)
		if err != nil {
			return entry{}, err
		}
		h, size, err := st.writer.WriteBytes(raw)
		if err != nil {
			return entry{}, err
		}
		desc = v1.Descriptor{MediaType: "application/vnd.oci.image.manifest.v1+json", Digest: h, Size: size}
	}
	imgs := make([]string, 0, len(c.images))
	for _, i := range c.images {
		if !excluded(st.manifest.Exclude, i.Ref) {
			imgs = append(imgs, i.Ref)
		}
	}
	la := bundle.LockArtifact{
		Kind: bundle.KindChart, Ref: f.Ref, Digest: desc.Digest.String(), MediaType: string(desc.MediaType), Source: f.Source,
		Chart: &bundle.LockChart{
			Name: c.spec.Name, Version: f.Version, Release: c.spec.Release, Namespace: c.spec.Namespace,
			Order: c.order, Values: c.values, Images: imgs,
		},
	}
	return entry{desc: bundle.Annotate(desc, bundle.KindChart, f.Ref), lock: la}, nil
}

// writeFiles copies every host file, checked against its sha256.
func writeFiles(ctx context.Context, st *state) error {
	var errs []error
	for _, spec := range st.manifest.Files {
		e, err := st.writeFile(ctx, spec)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		st.entries = append(st.entries, e)
	}
	if err := writePlatform(ctx, st); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (st *state) writeFile(ctx context.Context, spec v1alpha1.File) (entry, error) {
	h := v1.Hash{Algorithm: "sha256", Hex: spec.SHA256}
	err := st.writer.WriteStream(h, -1, func() (io.ReadCloser, error) {
		rc, _, _, err := st.fetch.OpenFile(ctx, spec)
		return rc, err
	})
	if err != nil {
		var de *bundle.DigestError
		if errors.As(err, &de) {
			return entry{}, fmt.Errorf("file %q (%s): sha256 is %s, the manifest says %s", spec.Name, spec.Source, de.Got.Hex, spec.SHA256)
		}
		return entry{}, fmt.Errorf("file %q: %w", spec.Name, err)
	}
	p, _ := st.store.BlobPath(h)
	fi, err := os.Stat(p)
	if err != nil {
		return entry{}, err
	}
	version := spec.Version
	if version == "" {
		version = spec.SHA256[:12]
	}
	if _, _, err := st.writer.WriteBytes(bundle.EmptyJSON); err != nil {
		return entry{}, err
	}
	raw, err := bundle.FileManifest(v1.Descriptor{Digest: h, Size: fi.Size()}, spec.Name, version, spec.Mode, spec.Target)
	if err != nil {
		return entry{}, err
	}
	mh, size, err := st.writer.WriteBytes(raw)
	if err != nil {
		return entry{}, err
	}
	r := "kpaas.local/files/" + spec.Name + ":" + version
	desc := v1.Descriptor{MediaType: "application/vnd.oci.image.manifest.v1+json", Digest: mh, Size: size}
	la := bundle.LockArtifact{
		Kind: bundle.KindFile, Ref: r, Digest: mh.String(), MediaType: string(desc.MediaType), Source: spec.Source,
		File: &bundle.LockedFile{Name: spec.Name, SHA256: spec.SHA256, Size: fi.Size(), Mode: spec.Mode, Target: spec.Target},
	}
	return entry{desc: bundle.Annotate(desc, bundle.KindFile, r), lock: la}, nil
}

// writeIndex writes index.json and the lock, and sums up sizes.
func writeIndex(ctx context.Context, st *state) error {
	m := st.manifest
	lock := &bundle.Lock{
		APIVersion: v1alpha1.APIVersion, Kind: bundle.LockKind,
		Name: m.Metadata.Name, Version: m.Metadata.Version,
		ManifestDigest: st.digest, KubernetesVersion: m.Kubernetes.Version, Platforms: m.Platforms,
	}
	descs := make([]v1.Descriptor, 0, len(st.entries))
	unique := map[v1.Hash]int64{}
	for _, e := range st.entries {
		seen := map[v1.Hash]bool{}
		err := st.store.Walk(e.desc, func(n bundle.Node) error {
			d := n.Descriptor
			if !seen[d.Digest] {
				seen[d.Digest] = true
				e.lock.Size += d.Size
			}
			unique[d.Digest] = d.Size
			return nil
		})
		if err != nil {
			return fmt.Errorf("%s %s: %w", e.lock.Kind, e.lock.Ref, err)
		}
		st.summary.LogicalBytes += e.lock.Size
		lock.Artifacts = append(lock.Artifacts, e.lock)
		descs = append(descs, e.desc)
		switch e.lock.Kind {
		case bundle.KindImage, bundle.KindOS:
			st.summary.Images++
		case bundle.KindChart:
			st.summary.Charts++
		case bundle.KindFile:
			st.summary.Files++
		}
	}
	for _, s := range unique {
		st.summary.UniqueBytes += s
	}
	st.summary.Blobs = int64(len(unique))
	st.summary.DedupSaved = st.summary.LogicalBytes - st.summary.UniqueBytes
	lock.Platform = st.lockPlatform()
	st.lock = lock
	b, err := lock.Marshal()
	if err != nil {
		return err
	}
	if _, err := st.store.WriteFile(bundle.LockFile, b); err != nil {
		return err
	}
	return st.store.SetEntries(descs)
}

// writeMetadata writes the SBOM, the checksum list and the signature, then
// makes everything durable.
func writeMetadata(ctx context.Context, st *state) error {
	if err := st.store.WriteSBOM(st.lock, bundle.WithCreated(st.opts.Epoch)); err != nil {
		return err
	}
	if err := st.store.WriteSums(); err != nil {
		return err
	}
	if st.opts.SignKey != nil {
		if err := st.store.Sign(st.opts.SignKey); err != nil {
			return err
		}
		st.summary.Signed = true
	} else {
		removed, err := st.store.Unsign()
		if err != nil {
			return err
		}
		st.summary.SignatureRemoved = removed
	}
	st.summary.Written = st.writer.Stats()
	return st.store.Sync()
}
