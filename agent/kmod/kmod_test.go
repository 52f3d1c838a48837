package kmod

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// An excerpt of Debian 6.1's modules.dep.
const dep = `kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/fs/jbd2/jbd2.ko:
kernel/fs/mbcache.ko:
kernel/lib/crc16.ko:
kernel/crypto/crc32c_generic.ko:
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/arch/x86/crypto/crc32c-intel.ko:
`

func index(t *testing.T) *Index {
	t.Helper()
	ix, err := ParseDep(strings.NewReader(dep))
	if err != nil {
		t.Fatal(err)
	}
	if err := ix.ParseBuiltin(strings.NewReader("kernel/drivers/block/loop.ko\n")); err != nil {
		t.Fatal(err)
	}
	return ix
}

func names(ms []*Module) string {
	var s []string
	for _, m := range ms {
		s = append(s, m.Name)
	}
	return strings.Join(s, " ")
}

func TestOrder(t *testing.T) {
	ix := index(t)
	got, err := ix.Order([]string{"virtio_pci", "virtio-blk", "crc32c-intel", "ext4", "loop", "ext4"})
	if err != nil {
		t.Fatal(err)
	}
	want := "virtio_pci_legacy_dev virtio_pci_modern_dev virtio virtio_ring virtio_pci virtio_blk crc32c_intel crc16 mbcache jbd2 ext4"
	if names(got) != want {
		t.Errorf("order\n got %s\nwant %s", names(got), want)
	}
}

func TestOrderMissing(t *testing.T) {
	got, err := index(t).Order([]string{"ext4", "nosuch", "isofs"})
	var nf *NotFoundError
	if !errors.As(err, &nf) || strings.Join(nf.Names, ",") != "isofs,nosuch" {
		t.Fatalf("err = %v", err)
	}
	if names(got) != "crc16 mbcache jbd2 ext4" {
		t.Errorf("found modules: %s", names(got))
	}
}

func TestOrderCycle(t *testing.T) {
	ix, _ := ParseDep(strings.NewReader("a.ko: b.ko\nb.ko: a.ko\n"))
	if _, err := ix.Order([]string{"a"}); err == nil || !strings.Contains(err.Error(), "cycle") {
		t.Fatalf("err = %v", err)
	}
}

func TestFormatDep(t *testing.T) {
	ix := index(t)
	mods, _ := ix.Order([]string{"virtio_blk"})
	var b bytes.Buffer
	if err := FormatDep(&b, mods, ix); err != nil {
		t.Fatal(err)
	}
	want := "kernel/drivers/virtio/virtio.ko:\nkernel/drivers/virtio/virtio_ring.ko:\nkernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
	again, err := ParseDep(&b)
	if err != nil || len(again.Modules) != 3 {
		t.Fatalf("round trip: %v %d", err, len(again.Modules))
	}
}

func TestParseDepError(t *testing.T) {
	if _, err := ParseDep(strings.NewReader("garbage\n")); err == nil {
		t.Fatal("accepted a line without ':'")
	}
}
