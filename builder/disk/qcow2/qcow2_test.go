package qcow2

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"kpaas.dev/appliance/internal/testenv"
)

func need(t *testing.T) {
	t.Helper()
	testenv.RequireTool(t, "qemu-img")
}

func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("qemu-img", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// sparseRaw makes a 3 GiB sparse raw image with data in a few places: at
// the start, across an L2 table boundary (512 MiB), in a cluster that is
// written with zeros (allocated on disk, but must stay unallocated in
// qcow2), and in the last, partial cluster.
func sparseRaw(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.raw")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	write := func(off int64, b []byte) {
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
	write(0, bytes.Repeat([]byte("boot"), 128))
	write(512<<20-100, bytes.Repeat([]byte{0xa5}, 300))
	write(1<<30, make([]byte, 1<<20)) // explicit zeros
	write(2<<30+12345, []byte("middle"))
	write(size-7, []byte("the end"))
	return p
}

func TestConvert(t *testing.T) {
	need(t)
	for _, size := range []int64{3 << 30, 3<<30 + 512*3} { // whole clusters, and a partial last one
		raw := sparseRaw(t, size)
		qc := raw + ".qcow2"
		var last int64
		st, err := ConvertFile(context.Background(), raw, qc, Options{Progress: func(done, total int64) { last = done }})
		if err != nil {
			t.Fatal(err)
		}
		if last != size || st.VirtualSize != size {
			t.Errorf("progress %d, virtual %d, want %d", last, st.VirtualSize, size)
		}
		if st.DataClusters != 5 {
			t.Errorf("%d data clusters, want 5 (zeros must not be allocated)", st.DataClusters)
		}
		if out := run(t, "check", qc); !strings.Contains(out, "No errors were found") {
			t.Errorf("qemu-img check: %s", out)
		}
		if out := run(t, "compare", "-f", "raw", "-F", "qcow2", raw, qc); !strings.Contains(out, "identical") {
			t.Errorf("qemu-img compare: %s", out)
		}
		var info struct {
			VirtualSize int64 `json:"virtual-size"`
			ClusterSize int64 `json:"cluster-size"`
			Specific    struct {
				Data struct {
					Compat string `json:"compat"`
				} `json:"data"`
			} `json:"format-specific"`
		}
		if err := json.Unmarshal([]byte(run(t, "info", "--output=json", qc)), &info); err != nil {
			t.Fatal(err)
		}
		if info.VirtualSize != size || info.ClusterSize != 65536 || info.Specific.Data.Compat != "1.1" {
			t.Errorf("qemu-img info: %+v", info)
		}
		fi, _ := os.Stat(qc)
		if fi.Size() > 1<<20 {
			t.Errorf("qcow2 is %d bytes for 5 data clusters", fi.Size())
		}
	}
}

func TestDeterministicAndAtomic(t *testing.T) {
	raw := sparseRaw(t, 1<<30)
	a, b := raw+".a", raw+".b"
	for _, p := range []string{a, b} {
		if _, err := ConvertFile(context.Background(), raw, p, Options{}); err != nil {
			t.Fatal(err)
		}
	}
	x, _ := os.ReadFile(a)
	y, _ := os.ReadFile(b)
	if !bytes.Equal(x, y) {
		t.Error("two conversions differ")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := ConvertFile(ctx, raw, raw+".c", Options{}); err == nil {
		t.Error("cancelled conversion succeeded")
	}
	if _, err := os.Stat(raw + ".c"); err == nil {
		t.Errorf("%s left behind", raw+".c")
	}
	if tmps, _ := filepath.Glob(filepath.Join(filepath.Dir(raw), ".tmp-*")); len(tmps) > 0 {
		t.Errorf("temp files left behind: %v", tmps)
	}
}
