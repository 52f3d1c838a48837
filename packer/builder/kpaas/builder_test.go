package kpaas

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/packer-plugin-sdk/packer"

	"kpaas.dev/appliance/packer/internal/fixture"
)

func TestPrepareDefaults(t *testing.T) {
	fx := fixture.Write(t, fixture.Options{})
	t.Chdir(t.TempDir())
	var b Builder
	if _, _, err := b.Prepare(map[string]interface{}{"bundle": fx.Dir, "packer_build_name": "node"}); err != nil {
		t.Fatal(err)
	}
	c := b.config
	if c.OutputDirectory != "output-node" || c.OutputName != "node" || !slices.Equal(c.Formats, []string{"qcow2"}) || c.diskSize != 0 {
		t.Errorf("defaults: output %q name %q formats %v size %d", c.OutputDirectory, c.OutputName, c.Formats, c.diskSize)
	}
}

// TestPrepareErrors: every problem is reported at once, with its field.
func TestPrepareErrors(t *testing.T) {
	dir := t.TempDir()
	full := filepath.Join(dir, "full")
	os.MkdirAll(full, 0o755)
	os.WriteFile(filepath.Join(full, "x"), nil, 0o644)
	var b Builder
	_, _, err := b.Prepare(map[string]interface{}{
		"bundle":           filepath.Join(dir, "missing"),
		"formats":          []string{"raw", "vmdk", "raw"},
		"disk_size":        "lots",
		"cluster_config":   filepath.Join(dir, "no-cluster.yaml"),
		"public_key":       filepath.Join(dir, "no.pub"),
		"install":          "sda",
		"output_directory": full,
		"output_name":      "a/b",
	})
	got := strings.Join(fixture.Errors(err), "\n")
	for _, want := range []string{
		"bundle: stat " + filepath.Join(dir, "missing"),
		`formats[1]: "vmdk" is not a format: want raw, qcow2 or iso`,
		"formats[2]: raw is listed twice",
		`disk_size: "lots": want a number`,
		"cluster_config: ",
		"public_key: ",
		`install: "sda": want auto or a disk such as /dev/sda`,
		"install: makes the ISO an installer, but formats has no iso",
		"output_directory: " + full + " exists and is not empty (packer build -force replaces it)",
		`output_name: "a/b" must be a file name`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("errors\n%s\nlack %q", got, want)
		}
	}
	if n := len(fixture.Errors(err)); n != 10 {
		t.Errorf("%d errors, want 10:\n%s", n, got)
	}
	if _, _, err := new(Builder).Prepare(map[string]interface{}{}); err == nil || !strings.Contains(err.Error(), "bundle: required") {
		t.Errorf("no bundle: %v", err)
	}
	if _, _, err := new(Builder).Prepare(map[string]interface{}{"bundle": "x", "nosuchfield": 1}); err == nil || !strings.Contains(err.Error(), "nosuchfield") {
		t.Errorf("unknown field: %v", err)
	}
}

func TestParseSizeForce(t *testing.T) {
	fx := fixture.Write(t, fixture.Options{})
	out := t.TempDir()
	os.WriteFile(filepath.Join(out, "old"), nil, 0o644)
	var b Builder
	if _, _, err := b.Prepare(map[string]interface{}{"bundle": fx.Dir, "output_directory": out, "packer_force": true, "disk_size": "1.5G"}); err != nil {
		t.Fatalf("-force with a full output folder: %v", err)
	}
	if b.config.diskSize != 3<<29 {
		t.Errorf("disk_size 1.5G = %d", b.config.diskSize)
	}
}

func build(t *testing.T, ctx context.Context, cfg map[string]interface{}) (packer.Artifact, error) {
	t.Helper()
	var b Builder
	if _, _, err := b.Prepare(cfg); err != nil {
		t.Fatal(err)
	}
	return b.Run(ctx, packer.TestUi(t), nil)
}

// TestRun writes raw and qcow2 from the fixture bundle (a folder and an
// export): the artifact lists them with their sha256, SHA256SUMS agrees,
// and nothing else is left in the output folder.
func TestRun(t *testing.T) {
	fx := fixture.Write(t, fixture.Options{Sign: true})
	for name, src := range map[string]string{"folder": fx.Dir, "export": fx.Export(t)} {
		t.Run(name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			a, err := build(t, t.Context(), map[string]interface{}{"bundle": src, "formats": []string{"qcow2", "raw"},
				"output_directory": out, "output_name": "node", "public_key": fx.Pub, "packer_build_name": "n"})
			if err != nil {
				t.Fatal(err)
			}
			if a.BuilderId() != BuilderID || a.Id() != fixture.Name+"-"+fixture.Version {
				t.Errorf("artifact %s %s", a.BuilderId(), a.Id())
			}
			want := []string{filepath.Join(out, "node.raw"), filepath.Join(out, "node.qcow2")}
			if !slices.Equal(a.Files(), want) {
				t.Errorf("files %v, want %v", a.Files(), want)
			}
			sums := a.State("sha256").(map[string]string)
			var list strings.Builder
			for _, f := range a.Files() {
				b, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				h := sha256.Sum256(b)
				if sums[f] != hex.EncodeToString(h[:]) {
					t.Errorf("%s: artifact sha256 %s, file %x", f, sums[f], h)
				}
				list.WriteString(sums[f] + "  " + filepath.Base(f) + "\n")
				if !strings.Contains(a.String(), "sha256:"+sums[f]) {
					t.Errorf("String() lacks %s's sha256:\n%s", f, a)
				}
			}
			if b, _ := os.ReadFile(filepath.Join(out, SumsFile)); string(b) != list.String() {
				t.Errorf("SHA256SUMS:\n%s\nwant\n%s", b, list.String())
			}
			des, _ := os.ReadDir(out)
			var names []string
			for _, d := range des {
				names = append(names, d.Name())
			}
			if !slices.Equal(names, []string{SumsFile, "node.qcow2", "node.raw"}) {
				t.Errorf("output folder holds %v", names)
			}
			if err := a.Destroy(); err != nil {
				t.Fatal(err)
			}
			if des, _ := os.ReadDir(out); len(des) != 0 {
				t.Errorf("Destroy left %d files", len(des))
			}
		})
	}
}

// TestRunLeavesNothing: a cancelled build and a build of a damaged bundle
// remove the output folder they made; an existing folder is kept, empty.
func TestRunLeavesNothing(t *testing.T) {
	fx := fixture.Write(t, fixture.Options{})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	out := filepath.Join(t.TempDir(), "out")
	if _, err := build(t, ctx, map[string]interface{}{"bundle": fx.Dir, "output_directory": out}); err == nil {
		t.Error("a cancelled build succeeded")
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("a cancelled build left %s: %v", out, err)
	}

	bad := fixture.Write(t, fixture.Options{})
	blob := filepath.Join(bad.Dir, "blobs", "sha256", bad.Layers[0].Hex)
	b, _ := os.ReadFile(blob)
	b[len(b)/2] ^= 0xff
	os.WriteFile(blob, b, 0o644)
	existing := t.TempDir()
	_, err := build(t, t.Context(), map[string]interface{}{"bundle": bad.Dir, "output_directory": existing, "formats": []string{"raw"}})
	if err == nil || !strings.Contains(err.Error(), "verify") {
		t.Errorf("a damaged bundle: %v", err)
	}
	if des, _ := os.ReadDir(existing); len(des) != 0 {
		t.Errorf("a failed build left %d files in the output folder", len(des))
	}
}
