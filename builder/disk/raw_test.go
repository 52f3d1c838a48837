package disk

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"kpaas.dev/appliance/builder/disk/squashfs"
)

type sfdiskJSON struct {
	PartitionTable struct {
		Label      string `json:"label"`
		ID         string `json:"id"`
		SectorSize int    `json:"sectorsize"`
		Partitions []struct {
			Start int64  `json:"start"`
			Size  int64  `json:"size"`
			Type  string `json:"type"`
			UUID  string `json:"uuid"`
			Name  string `json:"name"`
		} `json:"partitions"`
	} `json:"partitiontable"`
}

func TestRaw(t *testing.T) {
	need(t, "sfdisk", "fsck.vfat", "mdir", "mcopy", "unsquashfs")
	l := fixture(t)
	out := filepath.Join(t.TempDir(), "disk.raw")
	var progressed int64
	sum, err := WriteRaw(context.Background(), l, out, WithProgress(func(p Progress) { progressed = p.Done }))
	if err != nil {
		t.Fatal(err)
	}
	if progressed == 0 {
		t.Error("no progress reported")
	}
	t.Logf("raw: %d bytes, %d allocated, time %s, steps %v", sum.Size, sum.Allocated, sum.Time, sum.Steps)

	// partition table, read by sfdisk
	var sf sfdiskJSON
	if err := json.Unmarshal([]byte(run(t, "sfdisk", "--json", out)), &sf); err != nil {
		t.Fatal(err)
	}
	pt := sf.PartitionTable
	if pt.Label != "gpt" || !strings.EqualFold(pt.ID, sum.DiskGUID) {
		t.Errorf("label %s id %s, want gpt %s", pt.Label, pt.ID, sum.DiskGUID)
	}
	want := []struct{ name, typ string }{
		{"EFI", TypeESP}, {"KPAAS-ROOT-A", TypeLinux}, {"KPAAS-ROOT-B", TypeLinux},
		{"KPAAS-BUNDLE", TypeLinux}, {"KPAAS-STATE", TypeLinux},
	}
	if len(pt.Partitions) != len(want) {
		t.Fatalf("%d partitions, want %d: %+v", len(pt.Partitions), len(want), pt.Partitions)
	}
	for i, p := range pt.Partitions {
		s := sum.Partitions[i]
		if p.Name != want[i].name || !strings.EqualFold(p.Type, want[i].typ) || !strings.EqualFold(p.UUID, s.GUID) {
			t.Errorf("partition %d: %s %s %s, want %s %s %s", i+1, p.Name, p.Type, p.UUID, want[i].name, want[i].typ, s.GUID)
		}
		if p.Start%2048 != 0 || p.Start*512 != s.Offset || p.Size*512 != s.Size {
			t.Errorf("partition %d at sector %d size %d: not 1 MiB aligned or not as summarised (%+v)", i+1, p.Start, p.Size, s)
		}
	}
	if a, b := sum.Partitions[1].Size, sum.Partitions[2].Size; a != b {
		t.Errorf("ROOT-B size %d != ROOT-A size %d", b, a)
	}
	if sum.Allocated >= sum.Size/2 {
		t.Errorf("image not sparse: %d of %d bytes allocated", sum.Allocated, sum.Size)
	}

	// the ESP: fsck-clean FAT32 with the files
	esp := extract(t, out, sum.Partitions[0].Offset, sum.Partitions[0].Size)
	run(t, "fsck.vfat", "-n", esp)
	listing := run(t, "mdir", "-i", esp, "-/", "-b", "::/")
	for _, f := range []string{"::/EFI/BOOT/BOOTX64.EFI", "::/loader/entries/kpaas.conf", "::/loader/loader.conf", "::/kpaas/vmlinuz", "::/kpaas/initrd.img"} {
		if !strings.Contains(listing, f) {
			t.Errorf("ESP lacks %s:\n%s", f, listing)
		}
	}
	got := filepath.Join(t.TempDir(), "vmlinuz")
	run(t, "mcopy", "-i", esp, "::/kpaas/vmlinuz", got)
	kernel, _ := os.ReadFile(l.Kernel.path)
	if b, _ := os.ReadFile(got); !bytes.Equal(b, kernel) {
		t.Error("kernel read back from the ESP differs")
	}
	if info := run(t, "mdir", "-i", esp, "::/"); !strings.Contains(info, "Volume in drive : is EFI") || !strings.Contains(info, "2026-01-02") {
		t.Errorf("ESP label or timestamps:\n%s", info)
	}

	// root and bundle: squashfs with the trees
	root := extract(t, out, sum.Partitions[1].Offset, sum.Partitions[1].Used)
	s := run(t, "unsquashfs", "-s", root)
	if !strings.Contains(s, "Compression zstd") || !strings.Contains(s, "Block size 131072") {
		t.Errorf("root squashfs:\n%s", s)
	}
	if ls := run(t, "unsquashfs", "-l", root); !strings.Contains(ls, "squashfs-root/usr/bin/tool") || !strings.Contains(ls, "squashfs-root/bin") {
		t.Errorf("root listing:\n%s", ls)
	}
	sameTree(t, l.Root.Dir, unsquash(t, root))

	bundle := extract(t, out, sum.Partitions[3].Offset, sum.Partitions[3].Used)
	if s := run(t, "unsquashfs", "-s", bundle); !strings.Contains(s, "Data is uncompressed") {
		t.Errorf("bundle squashfs should store blobs as they are:\n%s", s)
	}
	sameTree(t, l.Bundle.Dir, unsquash(t, bundle))
}

func unsquash(t *testing.T, img string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "x")
	run(t, "unsquashfs", "-no-xattrs", "-d", dir, img)
	return dir
}

// sameTree compares names, types, modes, contents and link targets.
func sameTree(t *testing.T, want, got string) {
	t.Helper()
	err := filepath.Walk(want, func(p string, wi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(want, p)
		gi, err := os.Lstat(filepath.Join(got, rel))
		if err != nil {
			t.Errorf("%s missing: %v", rel, err)
			return nil
		}
		if wi.Mode() != gi.Mode() {
			t.Errorf("%s: mode %v, want %v", rel, gi.Mode(), wi.Mode())
		}
		switch {
		case wi.Mode().IsRegular():
			a, _ := os.ReadFile(p)
			b, _ := os.ReadFile(filepath.Join(got, rel))
			if !bytes.Equal(a, b) {
				t.Errorf("%s: content differs", rel)
			}
		case wi.Mode()&os.ModeSymlink != 0:
			a, _ := os.Readlink(p)
			b, _ := os.Readlink(filepath.Join(got, rel))
			if a != b {
				t.Errorf("%s: link %q, want %q", rel, b, a)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestRawDeterministic(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	var sums []string
	for i, l := range []Layout{fixture(t), fixture(t)} { // two separate, equal inputs
		out := filepath.Join(dir, "disk"+string(rune('a'+i))+".raw")
		if _, err := WriteRaw(ctx, l, out); err != nil {
			t.Fatal(err)
		}
		sums = append(sums, sha256File(t, out))
	}
	if sums[0] != sums[1] {
		t.Fatalf("two builds of the same input differ: %s %s", sums[0], sums[1])
	}

	// a different seed changes the identifiers, and only them
	out := filepath.Join(dir, "seeded.raw")
	sum, err := WriteRaw(ctx, fixture(t), out, WithSeed("site-42"))
	if err != nil {
		t.Fatal(err)
	}
	if sha256File(t, out) == sums[0] {
		t.Error("the seed did not change the image")
	}
	if sum.DiskGUID != deriveGUID("site-42", "disk") {
		t.Errorf("disk GUID %s not derived from the seed", sum.DiskGUID)
	}
}

func TestRawWithImages(t *testing.T) {
	// payloads packed once (as for raw + ISO), then placed by copying
	need(t, "unsquashfs")
	ctx := context.Background()
	l := fixture(t)
	dir := t.TempDir()
	for _, p := range []*Payload{&l.Root, &l.Bundle} {
		img := filepath.Join(dir, filepath.Base(p.Dir)+".squashfs")
		if _, err := squashfs.WriteFile(ctx, img, p.Dir, squashfs.Options{}); err != nil {
			t.Fatal(err)
		}
		*p = Payload{Image: img}
	}
	out := filepath.Join(dir, "disk.raw")
	sum, err := WriteRaw(ctx, l, out)
	if err != nil {
		t.Fatal(err)
	}
	root := extract(t, out, sum.Partitions[1].Offset, sum.Partitions[1].Used)
	if sha256File(t, root) != sha256File(t, l.Root.Image) {
		t.Error("root partition does not hold the root image")
	}
}

func TestBadInput(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	out := filepath.Join(dir, "out.img")

	l := fixture(t)
	l.Kernel = FromFile(filepath.Join(dir, "no-such-vmlinuz"))
	l.Bundle = Payload{}
	_, err := WriteRaw(ctx, l, out)
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "kernel") || !strings.Contains(err.Error(), "bundle") {
		t.Errorf("missing kernel and bundle: %v", err)
	}
	t.Log(err)
	noLeftovers(t, out)

	l = fixture(t)
	l.Sizes.Disk = 70 << 20
	_, err = WriteRaw(ctx, l, out)
	if !errors.Is(err, ErrTooSmall) {
		t.Errorf("disk too small: %v", err)
	}
	t.Log(err)
	noLeftovers(t, out)

	l = fixture(t)
	l.Sizes.Root = 1 // rounds to 1 MiB; the root does not fit
	l.Root.Squashfs.Compression = "none"
	writeFile(t, filepath.Join(l.Root.Dir, "big"), randomBytes(9, 2<<20))
	_, err = WriteQCOW2(ctx, l, out)
	if !errors.Is(err, ErrTooSmall) {
		t.Errorf("root partition too small: %v", err)
	}
	t.Log(err)
	noLeftovers(t, out)

	l = fixture(t)
	l.Root = Payload{Image: l.Kernel.path}
	_, err = WriteRaw(ctx, l, out)
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "squashfs") {
		t.Errorf("root image that is no squashfs: %v", err)
	}

	if _, err := Write(ctx, "vmdk", fixture(t), out); err == nil || !strings.Contains(err.Error(), "unsupported image format") {
		t.Errorf("unsupported format: %v", err)
	}
	if _, err := ParseFormat("qcow2"); err != nil {
		t.Error(err)
	}

	// cancelled: nothing left behind
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := WriteRaw(cctx, fixture(t), out); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
	noLeftovers(t, out)
}
