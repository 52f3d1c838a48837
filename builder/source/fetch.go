package source

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"kpaas.dev/appliance/api/bundle/v1alpha1"
	"kpaas.dev/appliance/builder/charts"
	"kpaas.dev/appliance/internal/bundle"
	"kpaas.dev/appliance/internal/ref"
)

// Fetcher finds charts and files: in the mirror first, then (unless
// Offline) over HTTP(S). Local paths are relative to BaseDir (the folder
// of the bundle manifest).
type Fetcher struct {
	BaseDir string
	Mirror  Mirrors // may be empty
	Offline bool
	Client  *http.Client
	// Images resolves oci:// charts.
	Images ImageSource
	// ChartTime is the modification time written into charts packaged
	// from a folder (reproducible output).
	ChartTime time.Time
}

func (f *Fetcher) client() *http.Client {
	if f.Client != nil {
		return f.Client
	}
	return &http.Client{Timeout: 10 * time.Minute}
}

func (f *Fetcher) local(p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(f.BaseDir, p)
}

func isURL(s string) bool { return strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://") }

// OpenFile opens the content of a manifest file entry. The caller must
// verify it against spec.SHA256 while reading (the bundle writer does).
// size is -1 when unknown.
func (f *Fetcher) OpenFile(ctx context.Context, spec v1alpha1.File) (rc io.ReadCloser, size int64, source string, err error) {
	if len(f.Mirror) > 0 {
		p, err := f.Mirror.File(spec.SHA256)
		if err == nil {
			return openLocal(p)
		}
		if !errors.Is(err, ErrNotFound) {
			return nil, 0, "", err
		}
	}
	if !isURL(spec.Source) {
		return openLocal(f.local(spec.Source))
	}
	if f.Offline {
		return nil, 0, "", fmt.Errorf("file %q: %s is not in the mirror (sha256 %s) and --offline forbids downloading", spec.Name, spec.Source, spec.SHA256)
	}
	resp, err := f.get(ctx, spec.Source)
	if err != nil {
		return nil, 0, "", fmt.Errorf("file %q: %w", spec.Name, err)
	}
	return resp.Body, resp.ContentLength, spec.Source, nil
}

func openLocal(p string) (io.ReadCloser, int64, string, error) {
	fh, err := os.Open(p)
	if err != nil {
		return nil, 0, "", err
	}
	fi, err := fh.Stat()
	if err != nil {
		fh.Close()
		return nil, 0, "", err
	}
	if !fi.Mode().IsRegular() {
		fh.Close()
		return nil, 0, "", fmt.Errorf("%s: not a regular file", p)
	}
	return fh, fi.Size(), "file:" + p, nil
}

func (f *Fetcher) get(ctx context.Context, u string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := f.client().Do(req)
	if err != nil {
		return nil, fmt.Errorf("downloading %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("downloading %s: %s", u, resp.Status)
	}
	return resp, nil
}

// Chart is a fetched chart package.
type Chart struct {
	Name, Version string
	Source        string
	// Archive is the chart's .tgz.
	Archive []byte
	// OCI is set for charts that came from an OCI registry or layout: the
	// artifact is copied as it is, keeping its digest.
	OCI *Image
	// Ref is the reference the chart is recorded under in the bundle.
	Ref string
}

// ChartRefRegistry is the pseudo-registry under which charts from Helm
// repositories and local folders are recorded: kpaas.local/charts/NAME:VERSION.
const ChartRefRegistry = "kpaas.local/charts"

// FetchChart fetches the chart a manifest entry names.
func (f *Fetcher) FetchChart(ctx context.Context, spec v1alpha1.Chart) (*Chart, error) {
	switch {
	case strings.HasPrefix(spec.Source, "oci://"):
		return f.ociChart(ctx, spec)
	case isURL(spec.Source):
		return f.repoChart(ctx, spec)
	default:
		return f.localChart(spec)
	}
}

func (f *Fetcher) ociChart(ctx context.Context, spec v1alpha1.Chart) (*Chart, error) {
	r, err := ref.Parse(strings.TrimPrefix(spec.Source, "oci://") + ":" + spec.Version)
	if err != nil {
		return nil, fmt.Errorf("chart %q: source %s: %w", spec.Name, spec.Source, err)
	}
	img, err := f.Images.Resolve(ctx, r)
	if err != nil {
		return nil, fmt.Errorf("chart %q: %w", spec.Name, err)
	}
	if img.Image == nil {
		return nil, fmt.Errorf("chart %q: %s is an index, not a chart", spec.Name, r)
	}
	layers, err := img.Image.Layers()
	if err != nil {
		return nil, fmt.Errorf("chart %q: %w", spec.Name, err)
	}
	for _, l := range layers {
		mt, err := l.MediaType()
		if err != nil || string(mt) != bundle.ChartLayerMediaType {
			continue
		}
		rc, err := l.Compressed()
		if err != nil {
			return nil, fmt.Errorf("chart %q: %w", spec.Name, err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			return nil, fmt.Errorf("chart %q: reading %s: %w", spec.Name, r, err)
		}
		return &Chart{Name: spec.Name, Version: spec.Version, Source: img.Source, Archive: b, OCI: img, Ref: r.String()}, nil
	}
	return nil, fmt.Errorf("chart %q: %s has no layer of type %s", spec.Name, r, bundle.ChartLayerMediaType)
}

// repoIndex is the part of a Helm repository's index.yaml that we read.
type repoIndex struct {
	Entries map[string][]struct {
		Version string   `json:"version"`
		URLs    []string `json:"urls"`
		Digest  string   `json:"digest"`
	} `json:"entries"`
}

func (f *Fetcher) repoChart(ctx context.Context, spec v1alpha1.Chart) (*Chart, error) {
	c := &Chart{Name: spec.Name, Version: spec.Version, Ref: ChartRefRegistry + "/" + spec.Name + ":" + spec.Version}
	if len(f.Mirror) > 0 {
		p, err := f.Mirror.Chart(spec.Name, spec.Version)
		if err == nil {
			c.Archive, err = os.ReadFile(p)
			c.Source = "mirror:" + p
			return c, err
		}
		if !errors.Is(err, ErrNotFound) {
			return nil, err
		}
	}
	if f.Offline {
		return nil, fmt.Errorf("chart %q %s: not in the mirror (charts/%s-%s.tgz) and --offline forbids downloading from %s", spec.Name, spec.Version, spec.Name, spec.Version, spec.Source)
	}
	base := strings.TrimSuffix(spec.Source, "/") + "/"
	idxURL := base + "index.yaml"
	body, err := f.fetchAll(ctx, idxURL)
	if err != nil {
		return nil, fmt.Errorf("chart %q: %w", spec.Name, err)
	}
	var idx repoIndex
	if err := yaml.Unmarshal(body, &idx); err != nil {
		return nil, fmt.Errorf("chart %q: parsing %s: %w", spec.Name, idxURL, err)
	}
	for _, e := range idx.Entries[spec.Name] {
		if e.Version != spec.Version || len(e.URLs) == 0 {
			continue
		}
		u, err := url.Parse(base)
		if err != nil {
			return nil, err
		}
		cu, err := u.Parse(e.URLs[0])
		if err != nil {
			return nil, fmt.Errorf("chart %q: bad URL %q in %s", spec.Name, e.URLs[0], idxURL)
		}
		c.Archive, err = f.fetchAll(ctx, cu.String())
		if err != nil {
			return nil, fmt.Errorf("chart %q: %w", spec.Name, err)
		}
		if e.Digest != "" {
			if got := sha256Hex(c.Archive); got != strings.TrimPrefix(e.Digest, "sha256:") {
				return nil, fmt.Errorf("chart %q: %s has sha256 %s, the repository index says %s", spec.Name, cu, got, e.Digest)
			}
		}
		c.Source = cu.String()
		return c, nil
	}
	return nil, fmt.Errorf("chart %q: version %s not in %s", spec.Name, spec.Version, idxURL)
}

func (f *Fetcher) fetchAll(ctx context.Context, u string) ([]byte, error) {
	resp, err := f.get(ctx, u)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(io.LimitReader(resp.Body, 256<<20))
}

func (f *Fetcher) localChart(spec v1alpha1.Chart) (*Chart, error) {
	p := f.local(spec.Source)
	fi, err := os.Stat(p)
	if err != nil {
		return nil, fmt.Errorf("chart %q: %w", spec.Name, err)
	}
	var archive []byte
	if fi.IsDir() {
		ch, err := charts.Load(p)
		if err != nil {
			return nil, fmt.Errorf("chart %q: %w", spec.Name, err)
		}
		var buf bytes.Buffer
		if err := charts.Package(ch, &buf, f.ChartTime); err != nil {
			return nil, fmt.Errorf("chart %q: packaging %s: %w", spec.Name, p, err)
		}
		archive = buf.Bytes()
	} else if archive, err = os.ReadFile(p); err != nil {
		return nil, fmt.Errorf("chart %q: %w", spec.Name, err)
	}
	return &Chart{Name: spec.Name, Version: spec.Version, Source: "file:" + spec.Source, Archive: archive}, nil
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
