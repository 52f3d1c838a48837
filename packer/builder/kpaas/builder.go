// Package kpaas is the Packer builder `kpaas`: it writes K-PaaS appliance
// media (raw, qcow2, ISO) from a bundle through builder/image, the library
// `kpaas image build` uses, in-process.
//
// Run is a literal list of steps (see Run). Packer calls Prepare once,
// then Run at most once; a cancelled or failed Run leaves no output behind:
// builder/image writes every format in a work folder and renames them into
// place together, and the output step's cleanup removes what a later step
// had published.
package kpaas

import (
	"context"
	"errors"
	"fmt"

	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
	"github.com/hashicorp/packer-plugin-sdk/packer"

	"kpaas.dev/appliance/builder/image"
	"kpaas.dev/appliance/internal/bundle"
	"kpaas.dev/appliance/packer/internal/source"
)

// BuilderID identifies the builder's artifacts to post-processors.
const BuilderID = "kpaas.builder.media"

// Builder is the `kpaas` builder.
type Builder struct {
	config Config
}

// ConfigSpec is the HCL2 schema of Config.
func (b *Builder) ConfigSpec() hcldec.ObjectSpec { return b.config.FlatMapstructure().HCL2Spec() }

// Prepare checks the configuration; it writes nothing.
func (b *Builder) Prepare(raws ...interface{}) ([]string, []string, error) {
	if err := b.config.Prepare(raws...); err != nil {
		return nil, nil, err
	}
	return nil, nil, nil
}

// env is what the steps share (typed; the state bag only carries the UI
// and the error, as multistep's conventions want).
type env struct {
	c       *Config
	ui      packer.Ui
	bundle  *source.Bundle
	lock    *bundle.Lock
	summary *image.Summary
	files   []File
	// madeOutput: the output folder did not exist; a failed run removes it.
	madeOutput bool
}

// Run writes the media.
func (b *Builder) Run(ctx context.Context, ui packer.Ui, hook packer.Hook) (packer.Artifact, error) {
	e := &env{c: &b.config, ui: ui}
	steps := []multistep.Step{
		&stepOutputDir{e}, // the output folder (replaced with -force); removed again on failure
		&stepBundle{e},    // the bundle folder, or an export imported beside the output
		&stepMedia{e},     // image.Build: verify, OS image, root, boot files, each format, publish
		&stepChecksums{e}, // every file's sha256, and SHA256SUMS beside them
	}
	state := new(multistep.BasicStateBag)
	state.Put("ui", ui)
	state.Put("hook", hook)
	runner := &multistep.BasicRunner{Steps: steps}
	runner.Run(ctx, state)
	if err, ok := state.GetOk("error"); ok {
		return nil, err.(error)
	}
	if _, ok := state.GetOk(multistep.StateCancelled); ok {
		return nil, errors.New("build was cancelled")
	}
	if _, ok := state.GetOk(multistep.StateHalted); ok {
		return nil, errors.New("build was halted")
	}
	return &Artifact{Dir: b.config.OutputDirectory, Media: e.files, BundleName: e.lock.Name, BundleVersion: e.lock.Version,
		OS: e.summary.OS, OSDigest: e.summary.OSDigest}, nil
}

// halt records err as the build's error, says it, and halts the steps.
func halt(state multistep.StateBag, ui packer.Ui, err error) multistep.StepAction {
	state.Put("error", err)
	ui.Error(err.Error())
	return multistep.ActionHalt
}

// failed tells whether the run ended without the media: an error, a
// cancellation or a halt.
func failed(state multistep.StateBag) bool {
	_, errored := state.GetOk("error")
	_, cancelled := state.GetOk(multistep.StateCancelled)
	_, halted := state.GetOk(multistep.StateHalted)
	return errored || cancelled || halted
}

var _ packer.Builder = (*Builder)(nil)

func (e *env) sayf(format string, args ...any) { e.ui.Say(fmt.Sprintf(format, args...)) }
