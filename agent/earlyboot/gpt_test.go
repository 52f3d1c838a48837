package earlyboot

import (
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"

	"kpaas.dev/appliance/internal/names"
)

// sfdiskCheck verifies an image with sfdisk, the independent tool, and
// returns the size (sectors) it reads for the last partition.
func sfdiskCheck(t *testing.T, img string) int64 {
	t.Helper()
	out, err := exec.Command("sfdisk", "--verify", img).CombinedOutput()
	if err != nil {
		t.Fatalf("sfdisk --verify: %v\n%s", err, out)
	}
	for _, bad := range []string{"error detected", "errors detected", "mismatch", "not on the end", "corrupt", "invalid"} {
		if !strings.Contains(string(out), "No errors detected") || strings.Contains(strings.ToLower(strings.ReplaceAll(string(out), "No errors detected", "")), bad) {
			t.Errorf("sfdisk --verify:\n%s", out)
			break
		}
	}
	out, err = exec.Command("sfdisk", "--json", img).Output()
	if err != nil {
		t.Fatalf("sfdisk --json: %v", err)
	}
	var pt struct {
		PartitionTable struct {
			Partitions []struct {
				Start, Size int64
				Name        string
			}
		}
	}
	if err := json.Unmarshal(out, &pt); err != nil {
		t.Fatal(err)
	}
	ps := pt.PartitionTable.Partitions
	if len(ps) != 3 || ps[2].Name != names.PartState || ps[2].Start != 67584 {
		t.Fatalf("sfdisk reads %+v", ps)
	}
	return ps[2].Size
}

func TestGrowGPT(t *testing.T) {
	img := gptImage(t) // 64 MiB, KPAAS-STATE last
	before := sfdiskCheck(t, img)
	if err := os.Truncate(img, 96<<20); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	// sfdisk left 2015 sectors of alignment slack after the state: too
	// little to grow into.
	if _, grown, err := GrowGPT(f, 64<<20, 3); err != nil || grown {
		t.Errorf("growing into the slack of an unchanged disk: %v, %v", grown, err)
	}
	if _, _, err := GrowGPT(f, 96<<20, 2); err == nil || !strings.Contains(err.Error(), "not the last") {
		t.Errorf("growing a partition that is not the last: %v", err)
	}
	p, grown, err := GrowGPT(f, 96<<20, 3)
	if err != nil || !grown {
		t.Fatalf("GrowGPT = %v, %v", grown, err)
	}
	// 96 MiB = 196608 sectors; the backup takes the last 33 (32 of entries).
	if want := uint64(196608 - 34); p.LastLBA != want || p.FirstLBA != 67584 {
		t.Errorf("grown to %d–%d, want last LBA %d", p.FirstLBA, p.LastLBA, want)
	}
	if after := sfdiskCheck(t, img); after != int64(p.LastLBA-p.FirstLBA+1) || after <= before {
		t.Errorf("sfdisk reads %d sectors after growing (%d before, want %d)", after, before, p.LastLBA-p.FirstLBA+1)
	}
	parts, err := ReadGPT(f)
	if err != nil || len(parts) != 3 || parts[2].LastLBA != p.LastLBA {
		t.Errorf("ReadGPT after growing: %+v, %v", parts, err)
	}
	if _, grown, err := GrowGPT(f, 96<<20, 3); err != nil || grown {
		t.Errorf("growing again: %v, %v; want nothing to do", grown, err)
	}

	// A damaged header is refused before anything is written.
	b := make([]byte, 1)
	f.ReadAt(b, 512+60) // the disk GUID, inside the header's CRC-covered 92 bytes
	f.WriteAt([]byte{b[0] ^ 0xff}, 512+60)
	if _, _, err := GrowGPT(f, 128<<20, 3); err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Errorf("a damaged header: %v", err)
	}
}
