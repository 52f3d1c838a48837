package image

import (
	"testing"

	"kpaas.dev/appliance/agent/earlyboot"
	"kpaas.dev/appliance/builder/disk"
)

// kpaas-init finds what the media writer puts on the media by these names;
// the agent may not import the builder, so the two are checked here.
func TestEarlybootNames(t *testing.T) {
	for _, c := range []struct{ what, media, earlyboot string }{
		{"config on the ESP", ConfigPath, "/" + earlyboot.ESPConfig},
		{"the ISO's EFI image", disk.ISOEFIBootPath, "/" + earlyboot.ISOESP},
		{"the ESP's GPT name", disk.NameESP, earlyboot.PartESP},
		{"root A", disk.NameRootA, earlyboot.PartRootA},
		{"root B", disk.NameRootB, earlyboot.PartRootB},
		{"bundle", disk.NameBundle, earlyboot.PartBundle},
		{"state", disk.NameState, earlyboot.PartState},
		{"ISO label", disk.ISOLabel, earlyboot.ISOLabel},
		{"ISO root", disk.ISORootPath, "/" + earlyboot.ISORoot},
		{"ISO bundle", disk.ISOBundlePath, "/" + earlyboot.ISOBundle},
	} {
		if c.media != c.earlyboot {
			t.Errorf("%s: the media say %q, kpaas-init %q", c.what, c.media, c.earlyboot)
		}
	}
}
