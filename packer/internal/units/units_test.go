package units

import "testing"

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"20G": 20 << 30, "20GiB": 20 << 30, "20GB": 20e9, "512M": 512 << 20,
		"1.5G": 3 << 29, "4096": 4096, " 2 g ": 2 << 30, "1T": 1 << 40} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "G", "-1G", "0", "2X", "1e3"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) succeeded", in)
		}
	}
}
