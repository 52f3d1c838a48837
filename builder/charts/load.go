package charts

import (
	"fmt"
	"strings"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
)

// Load reads a chart from a folder or a .tgz archive.
//
// Like `helm template`, it refuses a chart whose Chart.yaml lists
// dependencies that are not vendored under charts/: rendering such a chart
// would silently miss the images of the absent subcharts.
func Load(path string) (*chart.Chart, error) {
	c, err := loader.Load(path)
	if err != nil {
		return nil, fmt.Errorf("loading chart %q: %w", path, err)
	}
	if err := checkDependencies(c); err != nil {
		return nil, fmt.Errorf("loading chart %q: %w", path, err)
	}
	return c, nil
}

// checkDependencies reports the dependencies of c (and of its subcharts)
// that are declared in Chart.yaml but missing from charts/.
func checkDependencies(c *chart.Chart) error {
	have := map[string]bool{}
	for _, d := range c.Dependencies() {
		have[d.Name()] = true
	}
	var missing []string
	for _, d := range c.Metadata.Dependencies {
		if !have[d.Name] {
			missing = append(missing, d.Name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("chart %q: dependencies %s are missing from charts/ (run `helm dependency build`)",
			c.ChartFullPath(), strings.Join(missing, ", "))
	}
	for _, d := range c.Dependencies() {
		if err := checkDependencies(d); err != nil {
			return err
		}
	}
	return nil
}
