package kpaas

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
	"github.com/hashicorp/packer-plugin-sdk/packer"

	"kpaas.dev/appliance/builder/image"
	"kpaas.dev/appliance/internal/atomicfile"
	"kpaas.dev/appliance/internal/progress"
	"kpaas.dev/appliance/packer/internal/source"
)

// stepOutputDir makes the output folder. With -force an existing one is
// removed first. When the build fails or is cancelled, its cleanup
// removes the media a later step published, and the folder when this
// step made it.
type stepOutputDir struct{ e *env }

func (s *stepOutputDir) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	dir := s.e.c.OutputDirectory
	if _, err := os.Stat(dir); err == nil && s.e.c.PackerForce {
		s.e.sayf("Removing %s (-force)", dir)
		if err := os.RemoveAll(dir); err != nil {
			return halt(state, s.e.ui, fmt.Errorf("output_directory: %w", err))
		}
	}
	if _, err := os.Stat(dir); err != nil {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return halt(state, s.e.ui, fmt.Errorf("output_directory: %w", err))
		}
		s.e.madeOutput = true
	}
	return multistep.ActionContinue
}

func (s *stepOutputDir) Cleanup(state multistep.StateBag) {
	if !failed(state) {
		return
	}
	dir := s.e.c.OutputDirectory
	if s.e.madeOutput {
		s.e.sayf("Removing %s", dir)
		os.RemoveAll(dir)
		return
	}
	for _, f := range s.e.published() {
		os.Remove(f)
	}
}

// published lists the files the media step may have put into the output
// folder.
func (e *env) published() []string {
	var out []string
	for _, f := range e.c.formats {
		out = append(out, image.OutputPath(e.outBase(), f))
	}
	return append(out, filepath.Join(e.c.OutputDirectory, SumsFile))
}

func (e *env) outBase() string { return filepath.Join(e.c.OutputDirectory, e.c.OutputName) }

// stepBundle opens the bundle; an export is imported into a temporary
// folder inside the output folder (same file system as the media's work
// folder), removed in the cleanup.
type stepBundle struct{ e *env }

func (s *stepBundle) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	c := s.e.c
	if !source.IsFolder(c.Bundle) {
		s.e.sayf("Importing the exported bundle %s", c.Bundle)
	}
	b, err := source.Open(ctx, c.Bundle, c.OutputDirectory)
	if err != nil {
		return halt(state, s.e.ui, fmt.Errorf("bundle: %w", err))
	}
	s.e.bundle = b
	lock, err := b.ReadLock()
	if err != nil {
		return halt(state, s.e.ui, fmt.Errorf("bundle: %w", err))
	}
	s.e.lock = lock
	s.e.sayf("Bundle %s %s (%d artifacts)", lock.Name, lock.Version, len(lock.Artifacts))
	return multistep.ActionContinue
}

func (s *stepBundle) Cleanup(multistep.StateBag) {
	if s.e.bundle != nil {
		s.e.bundle.Close()
	}
}

// stepMedia writes the media with builder/image, its phase lines on
// Packer's UI.
type stepMedia struct{ e *env }

func (s *stepMedia) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	c := s.e.c
	w := &uiWriter{ui: s.e.ui}
	sum, err := image.Build(ctx, image.Options{
		Bundle:       s.e.bundle.Root(),
		Formats:      c.formats,
		Out:          s.e.outBase(),
		Config:       c.ClusterConfig,
		PublicKey:    c.publicKey,
		DiskSize:     c.diskSize,
		KeepOSLayers: c.KeepOSLayers,
		Cmdline:      c.Cmdline,
		Install:      c.Install,
		Progress:     progress.New(w, progress.Terminal(false)),
	})
	w.Flush()
	if err != nil {
		return halt(state, s.e.ui, err)
	}
	s.e.summary = sum
	s.e.sayf("OS image %s (%s), kernel %s; %d node files in the root", sum.OS, sum.OSDigest, sum.KernelRelease, len(sum.NodeFiles))
	for _, o := range sum.Outputs {
		s.e.sayf("%s: %s, %s on disk, in %s", o.Path, progress.Bytes(o.Size), progress.Bytes(o.Allocated), o.Duration.Round(1e6))
	}
	return multistep.ActionContinue
}

func (s *stepMedia) Cleanup(multistep.StateBag) {}

// SumsFile lists the media's sha256 in the output folder, in the format
// of sha256sum (sha256sum -c SHA256SUMS).
const SumsFile = "SHA256SUMS"

// stepChecksums hashes every written file and writes SHA256SUMS.
type stepChecksums struct{ e *env }

func (s *stepChecksums) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	var list bytes.Buffer
	for _, o := range s.e.summary.Outputs {
		sum, err := sha256File(ctx, o.Path)
		if err != nil {
			return halt(state, s.e.ui, err)
		}
		s.e.files = append(s.e.files, File{Format: string(o.Format), Path: o.Path, Size: o.Size, SHA256: sum})
		fmt.Fprintf(&list, "%s  %s\n", sum, filepath.Base(o.Path))
	}
	if err := atomicfile.WriteFile(filepath.Join(s.e.c.OutputDirectory, SumsFile), list.Bytes(), 0o644); err != nil {
		return halt(state, s.e.ui, err)
	}
	return multistep.ActionContinue
}

func (s *stepChecksums) Cleanup(multistep.StateBag) {}

// sha256File hashes a file, stopping when ctx is cancelled.
func sha256File(ctx context.Context, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		n, err := f.Read(buf)
		h.Write(buf[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", fmt.Errorf("hashing %s: %w", path, err)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// uiWriter turns the progress lines of builder/image into UI messages.
type uiWriter struct {
	ui  packer.Ui
	mu  sync.Mutex
	buf []byte
}

func (w *uiWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		if line := strings.TrimRight(string(w.buf[:i]), "\r"); line != "" {
			w.ui.Message(line)
		}
		w.buf = w.buf[i+1:]
	}
}

// Flush says a last line without its newline.
func (w *uiWriter) Flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.ui.Message(string(w.buf))
		w.buf = nil
	}
}
