// Package kpaas is the Packer provisioner `kpaas`: it makes a machine
// another builder made (a site's own base image, through the qemu,
// vSphere or OpenStack builders) into a K-PaaS node, over the
// communicator: it checks the machine first and names everything that is
// missing, then uploads the bundle, kpaas-agent and the node files into a
// staging folder, checks every uploaded byte's sha256 on the machine, and
// moves them into place as root: the bundle under the media directory
// (bind-mounted read-only at /run/kpaas/bundle at boot, where kpaas-init
// mounts it on media), the node files at their targets with their modes,
// the agent's systemd units, enabled for the next boot. The machine then
// boots like one booted from kpaas media: kpaas-agent opens the bundle
// and goes on with the site's cluster configuration.
//
// Provision is a literal list of steps (see Provision). Packer calls
// Prepare once and Provision once per machine; Provision may run again on
// a machine provisioned before (the bundle is replaced whole). A failed or
// cancelled Provision removes its staging folder; what an interrupted
// install step had moved into place stays (the image is discarded by
// Packer on a failed build anyway).
package kpaas

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/hashicorp/packer-plugin-sdk/packer"
	"github.com/hashicorp/packer-plugin-sdk/template/interpolate"

	"kpaas.dev/appliance/agent"
	"kpaas.dev/appliance/internal/progress"
	"kpaas.dev/appliance/packer/internal/source"
)

// Provisioner is the `kpaas` provisioner.
type Provisioner struct {
	config Config
}

// ConfigSpec is the HCL2 schema of Config.
func (p *Provisioner) ConfigSpec() hcldec.ObjectSpec { return p.config.FlatMapstructure().HCL2Spec() }

// Prepare checks the configuration; it reads the bundle's lock only.
func (p *Provisioner) Prepare(raws ...interface{}) error { return p.config.Prepare(raws...) }

// run is one Provision.
type run struct {
	c    *Config
	ui   packer.Ui
	comm packer.Communicator

	bundle  *source.Bundle
	plan    *Plan
	local   string // local temporary folder (the agent binary)
	agent   string // the agent binary to upload
	staging string // the staging folder on the machine
	mounts  []Mount
	reuse   Reuse // what the machine holds already
}

// Provision makes the machine a K-PaaS node.
func (p *Provisioner) Provision(ctx context.Context, ui packer.Ui, comm packer.Communicator, _ map[string]interface{}) error {
	r := &run{c: &p.config, ui: ui, comm: comm}
	defer r.cleanup()
	steps := []struct {
		name string
		run  func(context.Context) error
	}{
		{"bundle", r.openBundle},  // open (an export is imported), the signature, what goes where
		{"agent", r.findAgent},    // agent_binary, or kpaas-agent from the bundle's OS image
		{"target", r.checkTarget}, // root, Linux x86_64, systemd, Debian family, commands, space
		{"upload", r.upload},      // into a staging folder: bundle, node files, agent, units, sums
		{"install", r.install},    // sha256 checked on the machine, moved into place, agent enabled
	}
	for i, s := range steps {
		start := time.Now()
		if err := s.run(ctx); err != nil {
			ui.Error(fmt.Sprintf("phase %s (%d/%d): failed after %.1fs: %v", s.name, i+1, len(steps), time.Since(start).Seconds(), err))
			return fmt.Errorf("kpaas provisioner, %s: %w", s.name, err)
		}
		ui.Say(fmt.Sprintf("phase %s (%d/%d): done in %.1fs", s.name, i+1, len(steps), time.Since(start).Seconds()))
	}
	return nil
}

func (r *run) cleanup() {
	if r.staging != "" {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := r.remote(ctx, "rm -rf '"+r.staging+"'"); err != nil {
			r.ui.Error(fmt.Sprintf("kpaas: removing the staging folder %s: %v", r.staging, err))
		}
	}
	if r.local != "" {
		os.RemoveAll(r.local)
	}
	r.bundle.Close()
}

func (r *run) openBundle(ctx context.Context) error {
	if !source.IsFolder(r.c.Bundle) {
		r.ui.Message("importing the exported bundle " + r.c.Bundle)
	}
	b, err := source.Open(ctx, r.c.Bundle, "")
	if err != nil {
		return err
	}
	r.bundle = b
	if err := b.VerifyOnMedia(ctx, r.c.publicKey); err != nil {
		return fmt.Errorf("bundle %s: %w", r.c.Bundle, err)
	}
	if r.plan, err = MakePlan(b.Store, r.c.KeepOSLayers); err != nil {
		return err
	}
	r.mounts = Mounts(r.c.MediaDirectory, r.c.ClusterConfig != "")
	p := r.plan
	r.ui.Message(fmt.Sprintf("bundle %s %s (%d artifacts): %d files (%s) to upload, %d node files; %d blobs (%s) of the OS image and the node files not in the uploaded bundle",
		p.Name, p.Version, p.Artifacts, len(p.Bundle), progress.Bytes(p.UploadBytes()), len(p.NodeFiles), len(p.Omitted), progress.Bytes(p.OmittedBytes)))
	return nil
}

func (r *run) findAgent(ctx context.Context) error {
	if r.c.AgentBinary != "" {
		r.agent = r.c.AgentBinary
		return nil
	}
	if r.plan.OSImage == nil {
		return fmt.Errorf("bundle %s %s has no OS image to take kpaas-agent from: set agent_binary", r.plan.Name, r.plan.Version)
	}
	dir, err := os.MkdirTemp("", "packer-kpaas-")
	if err != nil {
		return err
	}
	r.local = dir
	r.agent = filepath.Join(dir, "kpaas-agent")
	if err := ExtractAgent(r.bundle.Store, *r.plan.OSImage, r.agent); err != nil {
		return err
	}
	r.ui.Message("kpaas-agent from the OS image " + r.plan.OSImage.Ref)
	return nil
}

func (r *run) checkTarget(ctx context.Context) error {
	out, err := r.remote(ctx, "mktemp -d '"+path.Join(r.c.StagingDirectory, "kpaas-XXXXXXXX")+"'")
	if err != nil {
		return fmt.Errorf("making a staging folder in %s: %w", r.c.StagingDirectory, err)
	}
	r.staging = strings.TrimSpace(out)
	if !path.IsAbs(r.staging) {
		return fmt.Errorf("mktemp printed %q", out)
	}
	var targets []string
	for _, f := range r.plan.NodeFiles {
		targets = append(targets, f.Target)
	}
	out, err = r.script(ctx, "check.sh", checkScript(r.c.MediaDirectory, targets))
	if err != nil {
		return err
	}
	t := parseTarget(out)
	fi, err := os.Stat(r.agent)
	if err != nil {
		return err
	}
	r.reuse = r.plan.Reusable(t)
	need := r.plan.UploadBytes() - r.reuse.Bytes + fi.Size() + r.c.minFree
	if ps := t.Problems(need); len(ps) > 0 {
		return fmt.Errorf("this machine cannot become a K-PaaS node:\n  %s", strings.Join(ps, "\n  "))
	}
	r.ui.Message(fmt.Sprintf("target: %s, %s free on %s", t.OSName, progress.Bytes(t.FreeBytes), t.FreeDir))
	if n := len(r.reuse.Blobs) + len(r.reuse.Files); n > 0 {
		r.ui.Message(fmt.Sprintf("on the machine already: %d blobs and %d node files (%s), not uploaded again",
			len(r.reuse.Blobs), len(r.reuse.Files), progress.Bytes(r.reuse.Bytes)))
	}
	return nil
}

func (r *run) upload(ctx context.Context) error {
	if _, err := r.remote(ctx, fmt.Sprintf("mkdir -p '%s/bundle/blobs/sha256' '%s/files' '%s/units'", r.staging, r.staging, r.staging)); err != nil {
		return err
	}
	var sums bytes.Buffer
	sum := func(rel, hex string) { fmt.Fprintf(&sums, "%s  %s\n", hex, rel) }
	for _, f := range r.plan.Bundle {
		if r.reuse.Blobs[f.SHA256] {
			sum("bundle/"+f.Rel, f.SHA256) // linked from the bundle there by the install script
			continue
		}
		h, err := r.uploadFile(ctx, r.bundle.Path(f.Rel), "bundle/"+f.Rel)
		if err != nil {
			return err
		}
		if f.SHA256 != "" && h != f.SHA256 {
			return fmt.Errorf("%s: read sha256 %s (the bundle is damaged)", f.Rel, h)
		}
		sum("bundle/"+f.Rel, h)
	}
	for _, f := range r.plan.NodeFiles {
		if r.reuse.Files[f.Target] {
			sum(f.Target, f.Blob.Hex) // in place already: checked again, then its mode and owner set
			continue
		}
		p, err := r.bundle.BlobPath(f.Blob)
		if err != nil {
			return err
		}
		h, err := r.uploadFile(ctx, p, "files/"+f.Blob.Hex)
		if err != nil {
			return err
		}
		if h != f.Blob.Hex {
			return fmt.Errorf("file %s: blob %s reads as sha256 %s (the bundle is damaged)", f.Ref, f.Blob, h)
		}
		sum("files/"+f.Blob.Hex, h)
	}
	h, err := r.uploadFile(ctx, r.agent, "kpaas-agent")
	if err != nil {
		return err
	}
	sum("kpaas-agent", h)
	small := map[string][]byte{
		"units/kpaas-agent.service":       agent.Unit,
		"units/kpaas-agent-renew.service": agent.RenewService,
		"units/kpaas-agent-renew.timer":   agent.RenewTimer,
		"units/10-provisioned.conf":       []byte(DropIn(r.mounts)),
	}
	for _, m := range r.mounts {
		small["units/"+m.Unit()] = []byte(m.Content())
	}
	for rel, local := range map[string]string{"bundle.pub": r.c.PublicKey, "cluster.yaml": r.c.ClusterConfig} {
		if local == "" {
			continue
		}
		b, err := os.ReadFile(local)
		if err != nil {
			return err
		}
		small[rel] = b
	}
	for rel, b := range small {
		if err := r.uploadBytes(rel, b); err != nil {
			return err
		}
		s := sha256.Sum256(b)
		sum(rel, hex.EncodeToString(s[:]))
	}
	return r.uploadBytes("upload.sha256", sums.Bytes())
}

func (r *run) install(ctx context.Context) error {
	script := installScript(r.staging, r.c.MediaDirectory, r.plan, r.reuse, r.mounts, r.c.PublicKey != "", r.c.ClusterConfig != "")
	out, err := r.script(ctx, "install.sh", script)
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l != "" {
			r.ui.Message(l)
		}
	}
	if err != nil {
		return err
	}
	r.staging = "" // the script removed it
	return nil
}

// uploadFile uploads a local file to rel in the staging folder and
// returns the sha256 of the bytes it read.
func (r *run) uploadFile(ctx context.Context, local, rel string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	f, err := os.Open(local)
	if err != nil {
		return "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	h := sha256.New()
	var rd io.ReadCloser = io.NopCloser(io.TeeReader(f, h))
	if fi.Size() >= 16<<20 {
		rd = r.ui.TrackProgress(path.Base(rel), 0, fi.Size(), rd)
	}
	defer rd.Close()
	if err := r.comm.Upload(path.Join(r.staging, rel), rd, &fi); err != nil {
		return "", fmt.Errorf("uploading %s: %w", rel, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func (r *run) uploadBytes(rel string, b []byte) error {
	if err := r.comm.Upload(path.Join(r.staging, rel), bytes.NewReader(b), nil); err != nil {
		return fmt.Errorf("uploading %s: %w", rel, err)
	}
	return nil
}

// script uploads a script into the staging folder and runs it as root
// (execute_command), returning its output.
func (r *run) script(ctx context.Context, name, content string) (string, error) {
	if err := r.uploadBytes(name, []byte(content)); err != nil {
		return "", err
	}
	r.c.ctx.Data = struct{ Path string }{path.Join(r.staging, name)}
	cmd, err := interpolate.Render(r.c.ExecuteCommand, &r.c.ctx)
	if err != nil {
		return "", fmt.Errorf("execute_command: %w", err)
	}
	return r.remote(ctx, cmd)
}

// RemoteError is a command that failed on the machine, with its output.
type RemoteError struct {
	Command string
	Status  int
	Output  string
}

func (e *RemoteError) Error() string {
	out := strings.TrimSpace(e.Output)
	if len(out) > 4000 {
		out = "…" + out[len(out)-4000:]
	}
	return fmt.Sprintf("%s: exit status %d\n%s", e.Command, e.Status, out)
}

// remote runs a command on the machine and returns its standard output;
// a non-zero exit is a *RemoteError carrying both outputs.
func (r *run) remote(ctx context.Context, command string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := &packer.RemoteCmd{Command: command, Stdout: &stdout, Stderr: &stderr}
	if err := r.comm.Start(ctx, cmd); err != nil {
		return "", fmt.Errorf("%s: %w", command, err)
	}
	done := make(chan int, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case status := <-done:
		if status != 0 {
			return stdout.String(), &RemoteError{Command: command, Status: status, Output: stdout.String() + stderr.String()}
		}
		return stdout.String(), nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

var _ packer.Provisioner = (*Provisioner)(nil)
