// Package osimage builds a node OS image from a definition (images/*.yaml)
// and stores it as an OCI image in an image layout, the way a bundle
// carries it ("bootable container"):
//
//   - layer 1, base: the root filesystem built by mmdebstrap (kernel and
//     modules included), cached by the definition's hash;
//   - layer 2, node: kpaas-agent with its systemd unit, and the kpaas
//     initramfs at boot/kpaas/initramfs.cpio.zst.
//
// The manifest's annotations (AnnotationKernel, AnnotationInitrd, …) tell
// the media writer where the kernel and initramfs are inside the image.
// Build also leaves the kernel (vmlinuz, and vmlinux for QEMU's direct
// boot) and the initramfs beside the layout, in boot/.
//
// Build is a literal list of steps (see Build); re-running it is cheap: the
// base comes from the cache, blobs already in the layout are skipped, and
// the same inputs give the same digests.
package osimage

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"kpaas.dev/appliance/api/osimage/v1alpha1"
	"kpaas.dev/appliance/internal/progress"
	"kpaas.dev/appliance/internal/steps"
)

// Annotations on the OS image's manifest.
const (
	AnnotationKernelRelease = "dev.kpaas.os.kernel-release"
	// AnnotationKernel is the kernel's path inside the image (bzImage).
	AnnotationKernel = "dev.kpaas.os.kernel"
	// AnnotationInitrd is the kpaas initramfs's path inside the image.
	AnnotationInitrd = "dev.kpaas.os.initrd"
	// AnnotationCmdline is the kernel command line the media should use.
	AnnotationCmdline = "dev.kpaas.os.cmdline"
)

// InitrdFile is the kpaas initramfs: a zstd-compressed newc cpio.
const InitrdFile = "initramfs.cpio.zst"

// Paths the node layer installs.
const (
	InitrdPath     = "boot/kpaas/" + InitrdFile
	AgentPath      = "usr/bin/kpaas-agent"
	AgentUnitPath  = "etc/systemd/system/kpaas-agent.service"
	AgentWantsPath = "etc/systemd/system/multi-user.target.wants/kpaas-agent.service"
	RenewUnitPath  = "etc/systemd/system/kpaas-agent-renew.service"
	RenewTimerPath = "etc/systemd/system/kpaas-agent-renew.timer"
	RenewWantsPath = "etc/systemd/system/timers.target.wants/kpaas-agent-renew.timer"
)

// DefaultCmdline is the kernel command line for the media: serial and
// screen consoles, quiet boot with systemd's status lines.
const DefaultCmdline = "console=tty0 console=ttyS0,115200 quiet systemd.show_status=1"

// Options configure a build. The CLI maps its flags onto them.
type Options struct {
	// CacheDir holds built bases (default: $KPAAS_CACHE/os or
	// os.UserCacheDir()/kpaas/os).
	CacheDir string
	// Epoch is every time in the layers, in seconds since 1970 (0, the
	// default: 1970-01-01). `kpaas os build` sets it from
	// SOURCE_DATE_EPOCH; the library does not read the environment.
	Epoch int64
	// Agent and Init are the kpaas-agent and kpaas-init binaries. Empty:
	// built from the module in the working directory with `go build`.
	Agent, Init string
	// Version is stamped into the agent binaries when they are built.
	Version string
	// Log receives progress lines (default: discarded).
	Log io.Writer
}

func (o *Options) defaults() {
	if o.CacheDir == "" {
		o.CacheDir = DefaultCacheDir()
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.Version == "" {
		o.Version = "dev"
	}
}

// DefaultCacheDir is $KPAAS_CACHE/os, else os.UserCacheDir()/kpaas/os.
func DefaultCacheDir() string {
	if c := os.Getenv("KPAAS_CACHE"); c != "" {
		return filepath.Join(c, "os")
	}
	if c, err := os.UserCacheDir(); err == nil {
		return filepath.Join(c, "kpaas", "os")
	}
	return filepath.Join(os.TempDir(), "kpaas-cache", "os")
}

func (o *Options) logf(format string, args ...any) { fmt.Fprintf(o.Log, format+"\n", args...) }

// RunError is a failed host command with its output.
type RunError struct {
	Cmd    string
	Output string
	Err    error
}

func (e *RunError) Error() string {
	out := strings.TrimSpace(e.Output)
	if len(out) > 4000 {
		out = "…" + out[len(out)-4000:]
	}
	return fmt.Sprintf("running %s: %v\n%s", e.Cmd, e.Err, out)
}

func (e *RunError) Unwrap() error { return e.Err }

// run runs a host command, logging its output, and returns a *RunError
// carrying the output's tail when it fails.
func (o *Options) run(ctx context.Context, prog string, args ...string) error {
	cmd := exec.CommandContext(ctx, prog, args...)
	var tail strings.Builder
	cmd.Stdout = io.MultiWriter(o.Log, &tail)
	cmd.Stderr = cmd.Stdout
	if err := cmd.Run(); err != nil {
		return &RunError{Cmd: prog + " " + strings.Join(args, " "), Output: tail.String(), Err: err}
	}
	return nil
}

// Result is what Build produced.
type Result struct {
	Ref    string // kpaas.local/os/<name>:<version>
	Digest string // the manifest's digest
	Base   *Base
	// Vmlinuz, Vmlinux (empty when the kernel cannot be unpacked) and
	// Initrd are the boot files written beside the layout.
	Vmlinuz, Vmlinux, Initrd string
	Elapsed                  time.Duration
}

// Build builds the image for def into the image layout at out (created
// when missing; other images in it are kept) and returns what it wrote.
func Build(ctx context.Context, def *v1alpha1.OSImage, out string, opts Options) (*Result, error) {
	opts.defaults()
	start := time.Now()
	st := &state{def: def, out: out, opts: opts, res: &Result{Ref: def.Ref()}}
	step := func(name string, run func(context.Context, *state) error) steps.Step {
		return steps.Step{Name: name, Run: func(ctx context.Context) error { return run(ctx, st) }}
	}
	list := []steps.Step{
		step("base", stepBase),         // mmdebstrap root, kernel, modules (cached)
		step("binaries", stepBinaries), // kpaas-agent, kpaas-init
		step("initramfs", stepInitramfs),
		step("node", stepNodeLayer), // agent, unit, initramfs
		step("image", stepImage),    // config, manifest, index.json
		step("boot", stepBootFiles), // vmlinuz, vmlinux, initramfs beside the layout
	}
	st.tmp, _ = os.MkdirTemp("", "kpaas-os-")
	defer os.RemoveAll(st.tmp)
	r := &steps.Runner{Progress: progress.New(opts.Log, progress.Terminal(false))}
	if err := r.Run(ctx, list); err != nil {
		return nil, fmt.Errorf("building OS image %s: %w", def.Metadata.Name, err)
	}
	st.res.Elapsed = time.Since(start)
	return st.res, nil
}

// state is what the steps share.
type state struct {
	def  *v1alpha1.OSImage
	out  string
	opts Options
	tmp  string

	base        *Base
	agent, init string
	initrd      string // the initramfs file
	node        Layer
	res         *Result
}

func stepBase(ctx context.Context, st *state) (err error) {
	if st.base, err = BuildBase(ctx, st.def, st.opts); err != nil {
		return err
	}
	ensureVmlinux(st.base, st.opts.logf)
	st.res.Base = st.base
	return nil
}

// stepBinaries builds kpaas-agent and kpaas-init (static, no cgo) unless
// the options name prebuilt ones.
func stepBinaries(ctx context.Context, st *state) error {
	st.agent, st.init = st.opts.Agent, st.opts.Init
	for _, b := range []struct {
		dst *string
		pkg string
	}{
		{&st.agent, "kpaas.dev/appliance/agent/cmd/kpaas-agent"},
		{&st.init, "kpaas.dev/appliance/agent/cmd/kpaas-init"},
	} {
		if *b.dst != "" {
			continue
		}
		*b.dst = filepath.Join(st.tmp, filepath.Base(b.pkg))
		if err := BuildBinary(ctx, b.pkg, *b.dst, st.opts.Version); err != nil {
			return err
		}
	}
	return nil
}

// BuildBinary builds one of the module's commands as a static,
// reproducible binary (no cgo, -trimpath, no build ID).
func BuildBinary(ctx context.Context, pkg, out, version string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false",
		"-ldflags", "-s -w -buildid= -X kpaas.dev/appliance/agent/version.Version="+version,
		"-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		return &RunError{Cmd: strings.Join(cmd.Args, " "), Output: string(b), Err: err}
	}
	return nil
}
