package charts

import (
	"archive/tar"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"
	"time"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chartutil"
	"sigs.k8s.io/yaml"
)

// Package writes c as a gzipped tar archive laid out like `helm package`
// output: <name>/Chart.yaml, <name>/values.yaml, templates, other files, and
// every subchart expanded under <name>/charts/<subchart>/.
//
// The archive is reproducible: entries are sorted by name, owned by uid/gid 0
// with mode 0644 and the given mtime (truncated to seconds), and the gzip
// header carries neither name nor time. The same chart and mtime always give
// the same bytes.
func Package(c *chart.Chart, w io.Writer, mtime time.Time) error {
	if err := c.Validate(); err != nil {
		return fmt.Errorf("packaging chart %q: %w", c.Name(), err)
	}
	var entries []entry
	if err := collect(&entries, c, ""); err != nil {
		return fmt.Errorf("packaging chart %q: %w", c.Name(), err)
	}
	slices.SortFunc(entries, func(a, b entry) int { return strings.Compare(a.name, b.name) })

	gz := gzip.NewWriter(w) // zero Header: no name, no mtime
	gz.Comment = "Helm"
	tw := tar.NewWriter(gz)
	mtime = mtime.UTC().Truncate(time.Second)
	for _, e := range entries {
		h := &tar.Header{
			Typeflag: tar.TypeReg,
			Name:     e.name,
			Mode:     0o644,
			Size:     int64(len(e.data)),
			ModTime:  mtime,
		}
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("packaging chart %q: writing %s: %w", c.Name(), e.name, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return fmt.Errorf("packaging chart %q: writing %s: %w", c.Name(), e.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("packaging chart %q: %w", c.Name(), err)
	}
	if err := gz.Close(); err != nil {
		return fmt.Errorf("packaging chart %q: %w", c.Name(), err)
	}
	return nil
}

type entry struct {
	name string
	data []byte
}

// collect appends the files of c under prefix, mirroring what
// chartutil.Save writes.
func collect(entries *[]entry, c *chart.Chart, prefix string) error {
	if c.Name() == "" || path.Base(c.Name()) != c.Name() {
		return fmt.Errorf("invalid chart name %q", c.Name())
	}
	base := path.Join(prefix, c.Name())
	add := func(name string, data []byte) {
		*entries = append(*entries, entry{path.Join(base, name), data})
	}

	md := *c.Metadata
	if md.APIVersion == chart.APIVersionV1 {
		md.Dependencies = nil // v1 charts keep them in requirements.yaml
	}
	data, err := yaml.Marshal(&md)
	if err != nil {
		return fmt.Errorf("encoding %s: %w", path.Join(base, chartutil.ChartfileName), err)
	}
	add(chartutil.ChartfileName, data)

	if c.Metadata.APIVersion == chart.APIVersionV2 && c.Lock != nil {
		data, err := yaml.Marshal(c.Lock)
		if err != nil {
			return fmt.Errorf("encoding %s: %w", path.Join(base, "Chart.lock"), err)
		}
		add("Chart.lock", data)
	}
	for _, f := range c.Raw {
		if f.Name == chartutil.ValuesfileName {
			add(chartutil.ValuesfileName, f.Data)
		}
	}
	if c.Schema != nil {
		if !json.Valid(c.Schema) {
			return fmt.Errorf("invalid JSON in %s", path.Join(base, chartutil.SchemafileName))
		}
		add(chartutil.SchemafileName, c.Schema)
	}
	for _, f := range c.Templates {
		add(f.Name, f.Data)
	}
	for _, f := range c.Files {
		add(f.Name, f.Data)
	}
	for _, d := range c.Dependencies() {
		if err := collect(entries, d, path.Join(base, chartutil.ChartsDir)); err != nil {
			return err
		}
	}
	return nil
}
