// Package units reads the sizes a template gives, as the kpaas CLI does.
package units

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
)

var sizeRE = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)\s*(?:([KkMmGgTt])(i?)([Bb]?))?$`)

// ParseSize reads a size such as 20G (GiB), 512M, 20GB (10^9) or a plain
// number of bytes, as `kpaas image build --disk-size` does.
func ParseSize(v string) (int64, error) {
	m := sizeRE.FindStringSubmatch(strings.TrimSpace(v))
	if m == nil {
		return 0, fmt.Errorf("%q: want a number with an optional K, M, G or T suffix (KiB, KB, …)", v)
	}
	n, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return 0, fmt.Errorf("%q: %w", v, err)
	}
	mult := 1.0
	if m[2] != "" {
		base := 1024.0
		if m[3] == "" && m[4] != "" {
			base = 1000
		}
		mult = math.Pow(base, float64(strings.Index("KMGT", strings.ToUpper(m[2]))+1))
	}
	size := n * mult
	if size < 1 || size > math.MaxInt64/2 {
		return 0, fmt.Errorf("%q is out of range", v)
	}
	return int64(size), nil
}
