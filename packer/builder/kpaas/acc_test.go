package kpaas

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/packer-plugin-sdk/acctest"

	"kpaas.dev/appliance/packer/internal/acc"
	"kpaas.dev/appliance/packer/internal/source"
	"kpaas.dev/appliance/qemu-tests/vm"
)

// TestAccMedia runs examples/media.pkr.hcl under a real Packer: the data
// source names the outputs after the demo bundle, the builder writes qcow2
// and ISO (the signature checked), the manifest post-processor records
// them. qemu-img check and sha256sum -c pass, and the qcow2 boots under
// QEMU (UEFI, TCG) to the agent's line.
func TestAccMedia(t *testing.T) {
	demo := acc.Require(t, "qemu-img", "qemu-system-x86_64", "sha256sum")
	dir := vm.Dir(t)
	out := filepath.Join(dir, "out")
	t.Setenv("PKR_VAR_bundle", demo)
	t.Setenv("PKR_VAR_output_directory", out)
	if pub := filepath.Join(filepath.Dir(demo), "demo.pub"); fileExists(pub) {
		t.Setenv("PKR_VAR_public_key", pub)
	}
	t.Chdir(dir)
	lock, err := source.ReadLock(demo)
	if err != nil {
		t.Fatal(err)
	}
	name := lock.Name + "-" + lock.Version
	start := time.Now()
	acctest.TestPlugin(t, &acctest.PluginTestCase{
		Name:     "kpaas_media",
		Type:     "kpaas",
		Template: acc.Example(t, "media.pkr.hcl"),
		Check: func(cmd *exec.Cmd, logfile string) error {
			if err := acc.Succeeded(cmd, logfile); err != nil {
				return err
			}
			var m struct {
				Builds []struct {
					BuilderType string `json:"builder_type"`
					Files       []struct {
						Name string `json:"name"`
					} `json:"files"`
				} `json:"builds"`
			}
			b, err := os.ReadFile(filepath.Join(out, "packer-manifest.json"))
			if err != nil {
				return err
			}
			if err := json.Unmarshal(b, &m); err != nil {
				return err
			}
			if len(m.Builds) != 1 || m.Builds[0].BuilderType != "kpaas" || len(m.Builds[0].Files) != 2 {
				return fmt.Errorf("packer-manifest.json: %s", b)
			}
			return nil
		},
	})
	t.Logf("packer build (qcow2 + ISO) in %s", time.Since(start).Round(100*time.Millisecond))
	qcow2 := filepath.Join(out, name+".qcow2")
	for _, c := range [][]string{{"qemu-img", "check", qcow2}, {"sh", "-c", "cd " + out + " && sha256sum -c SHA256SUMS"}} {
		if b, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", c, err, b)
		} else {
			t.Logf("%v:\n%s", c, b)
		}
	}
	if _, err := os.Stat(filepath.Join(out, name+".iso")); err != nil {
		t.Fatal(err)
	}
	v := vm.Start(t, vm.WithFirmware(vm.OVMF), vm.WithDisk(qcow2, "qcow2"))
	line, at := v.Expect(acc.AgentReady(t, demo), 6*time.Minute)
	t.Logf("qcow2 booted to the agent in %.1fs: %s", at.Seconds(), line)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
