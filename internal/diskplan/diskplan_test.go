package diskplan

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// a medium with one file and a plan that puts two pieces of it on a
// 64 KiB disk, with zeros between
func medium(t *testing.T) (string, *Plan, []byte) {
	dir := t.TempDir()
	data := bytes.Repeat([]byte("kpaas disk plan "), 4096) // 64 KiB
	if err := os.MkdirAll(filepath.Join(dir, "kpaas"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "kpaas/blob"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	p := &Plan{APIVersion: APIVersion, Kind: Kind, DiskSize: 1 << 16, DiskGUID: "x", StatePartition: 5, Extents: []Extent{
		{Offset: 0, Size: 4096, File: "kpaas/blob", SHA256: digest(data[:4096])},
		{Offset: 4096, Size: 8192},
		{Offset: 32768, Size: 1000, File: "kpaas/blob", FileOffset: 100, SHA256: digest(data[100:1100])},
	}}
	want := make([]byte, 1<<16)
	copy(want, data[:4096])
	copy(want[32768:], data[100:1100])
	return dir, p, want
}

func TestApplyVerify(t *testing.T) {
	dir, p, want := medium(t)
	target := filepath.Join(t.TempDir(), "disk")
	if err := os.WriteFile(target, make([]byte, 1<<16), 0o600); err != nil {
		t.Fatal(err)
	}
	// old content where the zero extent goes
	f, err := os.OpenFile(target, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.WriteAt(bytes.Repeat([]byte{0xff}, 8192), 4096)
	ctx := context.Background()
	if err := Apply(ctx, p, os.DirFS(dir), f, Options{}); err != nil {
		t.Fatal(err)
	}
	if err := Verify(ctx, p, f, Options{}); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(target)
	if !bytes.Equal(got, want) {
		t.Error("disk differs from the plan")
	}

	// a flipped byte on the disk, in a sourced and in a zero extent
	for _, at := range []int64{2000, 6000} {
		f.WriteAt([]byte{0x42}, at)
		err := Verify(ctx, p, f, Options{})
		if !errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), "disk at") {
			t.Errorf("flipped byte at %d: %v", at, err)
		}
		f.WriteAt(want[at:at+1], at)
	}
	// a damaged medium
	os.WriteFile(filepath.Join(dir, "kpaas/blob"), bytes.Repeat([]byte("x"), 1<<16), 0o644)
	if err := Apply(ctx, p, os.DirFS(dir), f, Options{}); !errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), "kpaas/blob on the medium") {
		t.Errorf("damaged medium: %v", err)
	}
	// a short one
	os.WriteFile(filepath.Join(dir, "kpaas/blob"), []byte("short"), 0o644)
	if err := Apply(ctx, p, os.DirFS(dir), f, Options{}); !errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), "kpaas/blob ends at 5") {
		t.Errorf("short medium file: %v", err)
	}
}

func TestValidate(t *testing.T) {
	p := &Plan{APIVersion: "v1", Kind: Kind, DiskSize: 1000, Extents: []Extent{
		{Offset: 0, Size: 512, File: "../etc/passwd", SHA256: "abc"},
		{Offset: 256, Size: 512},
		{Offset: 2048, Size: 512, SHA256: digest(nil)},
	}}
	err := p.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"apiVersion/kind v1/DiskPlan", "diskSize 1000", "clean relative path", "sha256 must be 64 hex digits",
		"extents[1] (zeros at 256+512): overlaps", "extents[2] (zeros at 2048+512): ends beyond diskSize", "a zero extent has no"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if _, err := Parse(strings.NewReader(`{"apiVersion":"kpaas.dev/v1alpha1","kind":"DiskPlan","diskSize":512,"extents":[{"offset":0,"size":512}],"extra":1}`)); err == nil || !strings.Contains(err.Error(), "extra") {
		t.Errorf("unknown field: %v", err)
	}
	if _, err := Parse(strings.NewReader(`{"apiVersion":"kpaas.dev/v1alpha1","kind":"DiskPlan","diskSize":512,"extents":[{"offset":0,"size":512}]}`)); err != nil {
		t.Errorf("minimal plan: %v", err)
	}
}
