package cli

import (
	"bytes"
	"strings"
	"testing"

	"kpaas.dev/appliance/builder/image"
)

func TestPrintImageSummary(t *testing.T) {
	var out bytes.Buffer
	printImageSummary(&streams{out: &out}, &image.Summary{
		OS: "kpaas.local/os/debian-12:12.0.1",
		NodeFiles: []image.NodeFile{
			{Name: "kubelet", Version: "v1.35.4", Target: "/usr/local/bin/kubelet", Mode: "0755", Size: 80 << 20, Digest: "sha256:aa"},
			{Name: "k8s-modules", Target: "/etc/modules-load.d/k8s.conf", Mode: "0644", Size: 21, Digest: "sha256:bb"},
		},
		NoTargetFiles: []string{"kpaas.local/files/notes:1"},
		BundleOmitted: []string{"sha256:aa", "sha256:bb", "sha256:cc"},
		OmittedBytes:  300 << 20,
	})
	t.Log("\n" + out.String())
	for _, want := range []string{
		"node files in the root: 2\n",
		"0755 /usr/local/bin/kubelet", "kubelet v1.35.4\n", "21 B  k8s-modules\n",
		"0644 /etc/modules-load.d/k8s.conf",
		"not in the root (no target), only in the bundle: kpaas.local/files/notes:1\n",
		"bundle: 1 OS layer and 2 node file blobs",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("no %q in:\n%s", want, out.String())
		}
	}
}
