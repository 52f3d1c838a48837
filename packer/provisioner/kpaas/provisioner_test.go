package kpaas

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/packer-plugin-sdk/packer"

	"kpaas.dev/appliance/internal/bundle"
	"kpaas.dev/appliance/packer/internal/fixture"
)

// TestPrepareErrors: every problem at once, with its field.
func TestPrepareErrors(t *testing.T) {
	dir := t.TempDir()
	var p Provisioner
	err := p.Prepare(map[string]interface{}{
		"bundle":            filepath.Join(dir, "missing"),
		"agent_binary":      filepath.Join(dir, "no-agent"),
		"cluster_config":    filepath.Join(dir, "no-cluster.yaml"),
		"public_key":        filepath.Join(dir, "no.pub"),
		"media_directory":   "relative/dir",
		"staging_directory": "/var/tmp/with space",
		"execute_command":   "sudo sh",
		"min_free_space":    "much",
	})
	got := strings.Join(fixture.Errors(err), "\n")
	for _, want := range []string{
		"bundle: stat " + filepath.Join(dir, "missing"),
		"agent_binary: stat ",
		"cluster_config: ",
		"public_key: ",
		`media_directory: "relative/dir": want an absolute path`,
		`staging_directory: "/var/tmp/with space": want an absolute path`,
		`execute_command: "sudo sh" does not run the script: it has no {{.Path}}`,
		`min_free_space: "much": want a number`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("errors\n%s\nlack %q", got, want)
		}
	}
	if n := len(fixture.Errors(err)); n != 8 {
		t.Errorf("%d errors, want 8:\n%s", n, got)
	}

	noOS := fixture.Write(t, fixture.Options{NoOS: true})
	if err := new(Provisioner).Prepare(map[string]interface{}{"bundle": noOS.Dir}); err == nil ||
		!strings.Contains(err.Error(), "agent_binary: required: bundle fixture 1.0.0 has no OS image") {
		t.Errorf("a bundle without an OS image and no agent_binary: %v", err)
	}
	if err := new(Provisioner).Prepare(map[string]interface{}{"bundle": noOS.Dir, "media_directory": "/run/kpaas-media"}); err == nil ||
		!strings.Contains(err.Error(), "media_directory: /run/kpaas-media does not survive a reboot") {
		t.Errorf("media_directory under /run: %v", err)
	}
}

func TestPrepareDefaults(t *testing.T) {
	fx := fixture.Write(t, fixture.Options{})
	var p Provisioner
	if err := p.Prepare(map[string]interface{}{"bundle": fx.Dir}); err != nil {
		t.Fatal(err)
	}
	c := p.config
	if c.MediaDirectory != DefaultMediaDirectory || c.StagingDirectory != DefaultStagingDirectory ||
		c.ExecuteCommand != DefaultExecuteCommand || c.minFree != 2<<30 {
		t.Errorf("defaults: %+v", c)
	}
}

// TestPlan: as on media, the OS image's layers and the node files' blobs
// are not uploaded into the bundle; node files go to their targets.
func TestPlan(t *testing.T) {
	files := []fixture.File{fixture.Kubeadm, {Name: "notes", Version: "1", Data: "no target\n"},
		{Name: "sysctl", Version: "1", Mode: "0600", Target: "/etc/sysctl.d/99-k8s.conf", Data: "net.ipv4.ip_forward = 1\n"}}
	fx := fixture.Write(t, fixture.Options{Files: files})
	s, err := bundle.Open(fx.Dir)
	if err != nil {
		t.Fatal(err)
	}
	p, err := MakePlan(s, false)
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != fixture.Name || p.Artifacts != 4 || p.OSImage == nil || p.OSImage.Ref != fixture.OSRef {
		t.Errorf("plan %+v", p)
	}
	var rels []string
	for _, f := range p.Bundle {
		rels = append(rels, f.Rel)
	}
	for _, h := range fx.Layers {
		if slices.Contains(rels, blobRel(h)) {
			t.Errorf("OS layer %s is uploaded", h)
		}
	}
	if slices.Contains(rels, blobRel(fx.Files[0])) || slices.Contains(rels, blobRel(fx.Files[2])) {
		t.Error("a node file's blob is in the uploaded bundle")
	}
	if !slices.Contains(rels, blobRel(fx.Files[1])) {
		t.Error("the file without a target is not in the uploaded bundle")
	}
	for _, f := range []string{bundle.LayoutFile, bundle.IndexFile, bundle.LockFile, bundle.SumsFile} {
		if !slices.Contains(rels, f) {
			t.Errorf("%s is not uploaded", f)
		}
	}
	if len(p.Omitted) != 4 {
		t.Errorf("omitted %v, want 2 layers and 2 node files", p.Omitted)
	}
	want := []NodeFile{
		{Ref: fixture.Kubeadm.Ref(), Target: "/usr/bin/kubeadm", Mode: "0755", Blob: fx.Files[0], Size: int64(len(fixture.Kubeadm.Data))},
		{Ref: files[2].Ref(), Target: "/etc/sysctl.d/99-k8s.conf", Mode: "0600", Blob: fx.Files[2], Size: int64(len(files[2].Data))},
	}
	if !slices.Equal(p.NodeFiles, want) {
		t.Errorf("node files\n%+v\nwant\n%+v", p.NodeFiles, want)
	}

	keep, err := MakePlan(s, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(keep.Bundle) != len(p.Bundle)+2 || len(keep.Omitted) != 2 {
		t.Errorf("keep_os_layers: %d files (%d without), omitted %v", len(keep.Bundle), len(p.Bundle), keep.Omitted)
	}
}

func TestExtractAgent(t *testing.T) {
	fx := fixture.Write(t, fixture.Options{})
	s, _ := bundle.Open(fx.Dir)
	p, err := MakePlan(s, false)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "kpaas-agent")
	if err := ExtractAgent(s, *p.OSImage, dst); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(dst)
	fi, _ := os.Stat(dst)
	if string(b) != fixture.Agent || fi.Mode().Perm() != 0o755 {
		t.Errorf("agent %q mode %v", b, fi.Mode())
	}
}

func TestTargetProblems(t *testing.T) {
	good := parseTarget("uid=0\nkernel=Linux\narch=x86_64\nos=debian\nos_version=12\nos_name=Debian GNU/Linux 12 (bookworm)\npid1=systemd\nsystemd=yes\nfree_kb=10485760\nfree_dir=/var\n")
	if ps := good.Problems(5 << 30); len(ps) != 0 {
		t.Errorf("a good machine: %v", ps)
	}
	if ps := (Target{UID: "0", Kernel: "Linux", Arch: "x86_64", OSLike: "ubuntu debian", Systemd: true, FreeBytes: 1 << 40}).Problems(1); len(ps) != 0 {
		t.Errorf("an Ubuntu derivative: %v", ps)
	}
	bad := parseTarget("uid=1000\nkernel=Linux\narch=aarch64\nos=alpine\nos_name=Alpine Linux v3.19\npid1=init\nfree_kb=1024\nfree_dir=/\nmissing=conntrack\nmissing=socat\nmissing=umount\nmissing=mount\n")
	got := strings.Join(bad.Problems(1<<30), "\n")
	for _, want := range []string{
		`the scripts run as uid "1000", not root`,
		"Linux aarch64: a K-PaaS node is Linux on x86_64",
		`systemd is not the init system (PID 1 is "init")`,
		"Alpine Linux v3.19: the node OS must be Debian or Ubuntu",
		"missing commands: conntrack, socat, umount, mount (packages: conntrack, socat, mount)",
		"1.0 MiB free on /; the bundle, the node files and the margin need 1.0 GiB",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("problems\n%s\nlack %q", got, want)
		}
	}
}

func TestMountUnits(t *testing.T) {
	ms := Mounts("/var/lib/kpaas-media", true)
	var units []string
	for _, m := range ms {
		units = append(units, m.Unit())
		if esc, err := exec.Command("systemd-escape", "--path", "--suffix=mount", m.Where).Output(); err == nil &&
			strings.TrimSpace(string(esc)) != m.Unit() {
			t.Errorf("%s: unit %s, systemd-escape says %s", m.Where, m.Unit(), esc)
		}
	}
	if !slices.Equal(units, []string{"run-kpaas-bundle.mount", "run-kpaas-esp.mount", "run-kpaas-config.mount"}) {
		t.Errorf("units %v", units)
	}
	if c := ms[0].Content(); !strings.Contains(c, "What=/var/lib/kpaas-media/bundle\nWhere=/run/kpaas/bundle\nType=none\nOptions=bind,ro\n") {
		t.Errorf("bundle mount:\n%s", c)
	}
	if d := DropIn(ms); !strings.Contains(d, "RequiresMountsFor=/run/kpaas/bundle /run/kpaas/esp /run/kpaas/config\n") {
		t.Errorf("drop-in:\n%s", d)
	}
}

// TestInstallScript: the script is valid sh and installs what the plan
// says.
func TestInstallScript(t *testing.T) {
	fx := fixture.Write(t, fixture.Options{})
	s, _ := bundle.Open(fx.Dir)
	p, _ := MakePlan(s, false)
	script := installScript("/var/tmp/kpaas-x", "/var/lib/kpaas-media", p, Reuse{}, Mounts("/var/lib/kpaas-media", true), true, true)
	for _, want := range []string{
		"sha256sum --quiet --strict -c upload.sha256",
		fmt.Sprintf(`install -D -o 0 -g 0 -m 0755 "$S/files/%s" '/usr/bin/kubeadm'`, fx.Files[0].Hex),
		`install -D -o 0 -g 0 -m 0755 "$S/kpaas-agent" /usr/bin/kpaas-agent`,
		`install -m 0644 "$S/bundle.pub" "$M/esp.new/kpaas/bundle.pub"`,
		`install -m 0644 "$S/cluster.yaml" "$M/config.new/cluster.yaml"`,
		"systemctl enable run-kpaas-bundle.mount run-kpaas-esp.mount run-kpaas-config.mount kpaas-agent.service kpaas-agent-renew.timer",
	} {
		if !strings.Contains(script, want) {
			t.Errorf("script lacks %q:\n%s", want, script)
		}
	}
	if strings.Contains(script, "systemctl start") {
		t.Error("the script starts a unit; the agent must run at the next boot only")
	}
	if out, err := exec.Command("sh", "-n", "-c", script).CombinedOutput(); err != nil {
		t.Errorf("sh -n: %v\n%s", err, out)
	}
}

// fakeComm is an in-memory communicator: uploads are kept; commands are
// answered: mktemp, the check script (canned facts), mkdir, and the
// install script, which checks upload.sha256 against the uploads as
// sha256sum -c would.
type fakeComm struct {
	mu        sync.Mutex
	facts     string
	files     map[string][]byte
	have      map[string][]byte // on the machine before: bundle/… of the media directory, node file targets
	commands  []string
	installed bool
}

func (c *fakeComm) Start(ctx context.Context, rc *packer.RemoteCmd) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.commands = append(c.commands, rc.Command)
	status := 0
	switch {
	case strings.HasPrefix(rc.Command, "mktemp -d "):
		io.WriteString(rc.Stdout, "/var/tmp/kpaas-test\n")
	case strings.Contains(rc.Command, "/var/tmp/kpaas-test/check.sh"):
		io.WriteString(rc.Stdout, c.facts)
	case strings.Contains(rc.Command, "/var/tmp/kpaas-test/install.sh"):
		for _, l := range strings.Split(strings.TrimSpace(string(c.files["/var/tmp/kpaas-test/upload.sha256"])), "\n") {
			sum, rel, _ := strings.Cut(l, "  ")
			b, ok := c.files["/var/tmp/kpaas-test/"+rel]
			if !ok {
				b = c.have[rel] // linked from the old bundle, or a target in place
			}
			h := sha256.Sum256(b)
			if hex.EncodeToString(h[:]) != sum {
				fmt.Fprintf(rc.Stderr, "%s: FAILED\n", rel)
				status = 1
			}
		}
		c.installed = status == 0
	}
	rc.SetExited(status)
	return nil
}

func (c *fakeComm) Upload(dst string, r io.Reader, _ *os.FileInfo) error {
	b, err := io.ReadAll(r)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.files[dst] = b
	return err
}

func (c *fakeComm) UploadDir(string, string, []string) error { return fmt.Errorf("not used") }
func (c *fakeComm) Download(string, io.Writer) error         { return fmt.Errorf("not used") }
func (c *fakeComm) DownloadDir(string, string, []string) error {
	return fmt.Errorf("not used")
}

const goodFacts = "uid=0\nkernel=Linux\narch=x86_64\nos=debian\nos_name=Debian 12\npid1=systemd\nsystemd=yes\nfree_kb=104857600\nfree_dir=/var\n"

// TestProvision runs the provisioner against the in-memory machine: what
// it uploads checks out, and the agent comes from the OS image.
func TestProvision(t *testing.T) {
	fx := fixture.Write(t, fixture.Options{Sign: true})
	var p Provisioner
	if err := p.Prepare(map[string]interface{}{"bundle": fx.Export(t), "public_key": fx.Pub}); err != nil {
		t.Fatal(err)
	}
	comm := &fakeComm{facts: goodFacts, files: map[string][]byte{}}
	if err := p.Provision(t.Context(), packer.TestUi(t), comm, nil); err != nil {
		t.Fatal(err)
	}
	if !comm.installed {
		t.Fatal("the install script did not run")
	}
	if got := string(comm.files["/var/tmp/kpaas-test/kpaas-agent"]); got != fixture.Agent {
		t.Errorf("agent %q", got)
	}
	for _, f := range []string{"bundle/kpaas-lock.json", "bundle.pub", "units/kpaas-agent.service", "units/run-kpaas-bundle.mount",
		"units/run-kpaas-esp.mount", "units/10-provisioned.conf", "files/" + fx.Files[0].Hex} {
		if _, ok := comm.files["/var/tmp/kpaas-test/"+f]; !ok {
			t.Errorf("%s not uploaded", f)
		}
	}
	if _, ok := comm.files["/var/tmp/kpaas-test/units/run-kpaas-config.mount"]; ok {
		t.Error("a config mount without cluster_config")
	}
	if last := comm.commands[len(comm.commands)-1]; strings.Contains(last, "rm -rf") {
		t.Errorf("the staging folder was removed by the provisioner after a good install (the script does it): %s", last)
	}
}

// TestProvisionTargetProblems: a machine that cannot be a node fails the
// target step naming every problem, nothing is uploaded but the check,
// and the staging folder is removed.
func TestProvisionTargetProblems(t *testing.T) {
	fx := fixture.Write(t, fixture.Options{})
	var p Provisioner
	if err := p.Prepare(map[string]interface{}{"bundle": fx.Dir}); err != nil {
		t.Fatal(err)
	}
	comm := &fakeComm{facts: "uid=0\nkernel=Linux\narch=x86_64\nos=debian\npid1=init\nfree_kb=10\nfree_dir=/var\nmissing=conntrack\n", files: map[string][]byte{}}
	err := p.Provision(t.Context(), packer.TestUi(t), comm, nil)
	if err == nil {
		t.Fatal("provisioned a machine without systemd")
	}
	for _, want := range []string{"kpaas provisioner, target: this machine cannot become a K-PaaS node", "systemd is not the init system",
		"missing commands: conntrack", "free on /var"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if len(comm.files) != 1 {
		t.Errorf("uploaded %d files, want only check.sh", len(comm.files))
	}
	if last := comm.commands[len(comm.commands)-1]; last != "rm -rf '/var/tmp/kpaas-test'" {
		t.Errorf("last command %q, want the staging folder removed", last)
	}
}

// TestProvisionDamagedUpload: bytes changed on the way fail the install's
// check.
func TestProvisionDamagedUpload(t *testing.T) {
	fx := fixture.Write(t, fixture.Options{})
	var p Provisioner
	if err := p.Prepare(map[string]interface{}{"bundle": fx.Dir}); err != nil {
		t.Fatal(err)
	}
	comm := &damagingComm{fakeComm{facts: goodFacts, files: map[string][]byte{}}}
	err := p.Provision(t.Context(), packer.TestUi(t), comm, nil)
	if err == nil || !strings.Contains(err.Error(), "kpaas-agent: FAILED") {
		t.Errorf("a damaged upload: %v", err)
	}
}

type damagingComm struct{ fakeComm }

func (c *damagingComm) Upload(dst string, r io.Reader, fi *os.FileInfo) error {
	if strings.HasSuffix(dst, "/kpaas-agent") {
		b, _ := io.ReadAll(r)
		r = bytes.NewReader(append(b, '!'))
	}
	return c.fakeComm.Upload(dst, r, fi)
}

// TestProvisionCancelled: a build cancelled during the upload stops
// there, never installs, and removes the staging folder.
func TestProvisionCancelled(t *testing.T) {
	fx := fixture.Write(t, fixture.Options{})
	var p Provisioner
	if err := p.Prepare(map[string]interface{}{"bundle": fx.Dir}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	comm := &cancellingComm{fakeComm: fakeComm{facts: goodFacts, files: map[string][]byte{}}, cancel: cancel}
	err := p.Provision(ctx, packer.TestUi(t), comm, nil)
	if err == nil || !strings.Contains(err.Error(), "kpaas provisioner, upload: context canceled") {
		t.Errorf("cancelled: %v", err)
	}
	if comm.installed {
		t.Error("installed after a cancel")
	}
	if last := comm.commands[len(comm.commands)-1]; last != "rm -rf '/var/tmp/kpaas-test'" {
		t.Errorf("last command %q, want the staging folder removed", last)
	}
}

// cancellingComm cancels the build at the first upload into the bundle.
type cancellingComm struct {
	fakeComm
	cancel context.CancelFunc
}

func (c *cancellingComm) Upload(dst string, r io.Reader, fi *os.FileInfo) error {
	if strings.Contains(dst, "/bundle/") {
		c.cancel()
	}
	return c.fakeComm.Upload(dst, r, fi)
}

// TestProvisionReuse: a machine provisioned before keeps what it has: the
// blobs of its bundle and the node files in place are not uploaded again;
// the install links the blobs and checks everything.
func TestProvisionReuse(t *testing.T) {
	fx := fixture.Write(t, fixture.Options{})
	s, _ := bundle.Open(fx.Dir)
	plan, err := MakePlan(s, false)
	if err != nil {
		t.Fatal(err)
	}
	facts := goodFacts
	have := map[string][]byte{}
	for _, f := range plan.Bundle {
		if f.SHA256 != "" {
			facts += fmt.Sprintf("blob=%s %d\n", f.SHA256, f.Size)
			have["bundle/"+f.Rel], _ = os.ReadFile(s.Path(f.Rel))
		}
	}
	facts += fmt.Sprintf("file=%s  %s\n", fx.Files[0].Hex, fixture.Kubeadm.Target)
	have[fixture.Kubeadm.Target] = []byte(fixture.Kubeadm.Data)
	var p Provisioner
	if err := p.Prepare(map[string]interface{}{"bundle": fx.Dir}); err != nil {
		t.Fatal(err)
	}
	comm := &fakeComm{facts: facts, files: map[string][]byte{}, have: have}
	if err := p.Provision(t.Context(), packer.TestUi(t), comm, nil); err != nil {
		t.Fatal(err)
	}
	if !comm.installed {
		t.Fatal("not installed")
	}
	for f := range comm.files {
		if strings.Contains(f, "/blobs/") || strings.Contains(f, "/files/") {
			t.Errorf("%s was uploaded again", f)
		}
	}
	script := string(comm.files["/var/tmp/kpaas-test/install.sh"])
	for _, want := range []string{`ln "$M/bundle/blobs/sha256/`, "chown 0:0 '/usr/bin/kubeadm' && chmod 0755 '/usr/bin/kubeadm'"} {
		if !strings.Contains(script, want) {
			t.Errorf("install script lacks %q", want)
		}
	}
	if sums := string(comm.files["/var/tmp/kpaas-test/upload.sha256"]); !strings.Contains(sums, fx.Files[0].Hex+"  /usr/bin/kubeadm\n") {
		t.Errorf("the node file in place is not checked again:\n%s", sums)
	}
}

// TestCheckScriptRuns runs the check script (read-only) on this machine,
// with a media directory and a node file target in a temporary folder.
func TestCheckScriptRuns(t *testing.T) {
	for _, tool := range []string{"sh", "stat", "sha256sum", "df", "awk"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s: %v", tool, err)
		}
	}
	dir := t.TempDir()
	media := filepath.Join(dir, "media")
	blobs := filepath.Join(media, "bundle", "blobs", "sha256")
	os.MkdirAll(blobs, 0o755)
	os.WriteFile(filepath.Join(blobs, strings.Repeat("a", 64)), []byte("12345"), 0o644)
	target := filepath.Join(dir, "usr bin", "kubelet")
	os.MkdirAll(filepath.Dir(target), 0o755)
	os.WriteFile(target, []byte("kubelet\n"), 0o755)
	out, err := exec.Command("sh", "-eu", "-c", checkScript(media, []string{target, filepath.Join(dir, "missing")})).CombinedOutput()
	if err != nil {
		t.Fatalf("check script: %v\n%s", err, out)
	}
	tg := parseTarget(string(out))
	h := sha256.Sum256([]byte("kubelet\n"))
	if tg.Blobs[strings.Repeat("a", 64)] != 5 || tg.Files[target] != hex.EncodeToString(h[:]) || len(tg.Files) != 1 {
		t.Errorf("blobs %v files %v from:\n%s", tg.Blobs, tg.Files, out)
	}
	if tg.Kernel != "Linux" || tg.UID == "" || tg.FreeBytes == 0 || tg.FreeDir != media {
		t.Errorf("facts %+v from:\n%s", tg, out)
	}
}
