package isohybrid

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The happy path (a real go-diskfs ISO, read back by fdisk and xorriso) is
// tested in package disk; these are the refusals.
func TestRefuses(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.iso")
	if err := os.WriteFile(p, make([]byte, 64<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := Apply(f, Options{MBRCode: make([]byte, 10)}); err == nil || !strings.Contains(err.Error(), "isohdpfx") {
		t.Errorf("short MBR code: %v", err)
	}
	if _, err := Apply(f, Options{MBRCode: make([]byte, 432)}); err == nil || !strings.Contains(err.Error(), "not an ISO 9660") {
		t.Errorf("not an ISO: %v", err)
	}
	pvd := make([]byte, 2048)
	pvd[0] = 1
	copy(pvd[1:], "CD001")
	f.WriteAt(pvd, 16*2048)
	if _, err := Apply(f, Options{MBRCode: make([]byte, 432)}); err == nil || !strings.Contains(err.Error(), "El Torito") {
		t.Errorf("no El Torito: %v", err)
	}
	if b := make([]byte, 512); true {
		f.ReadAt(b, 0)
		for _, c := range b {
			if c != 0 {
				t.Fatal("a refused image was modified")
			}
		}
	}
}
