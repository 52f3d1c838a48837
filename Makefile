# kpaas-appliance — `make help` lists the targets.
SHELL := /bin/bash
.DELETE_ON_ERROR:
.DEFAULT_GOAL := help

GO        ?= go
OUT       ?= out
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X kpaas.dev/appliance/builder/cli.Version=$(VERSION)
KPAAS     := $(OUT)/bin/kpaas
export CGO_ENABLED ?= 0

.PHONY: help
help: ## List the targets
	@awk 'BEGIN{FS=":.*## "} /^[a-zA-Z_-]+:.*## /{printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: deps
deps: ## Install the host tools the tests use (Debian packages; needs root)
	hack/install-deps.sh

.PHONY: build
build: ## Build the kpaas binary into out/bin
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(KPAAS) ./builder/cmd/kpaas

.PHONY: demo-deps
demo-deps: ## Install the Debian packages `make demo` needs (as root; otherwise names them and fails)
	hack/install-deps.sh demo

.PHONY: demo
demo: demo-deps build ## Bake the demo bundle (bundles/demo.yaml: Kubernetes from source + demo workload) offline into out/demo-bundle, signed
	$(KPAAS) toolchain build --out $(OUT)/mirror
	$(GO) run ./bundles/demo/mkmirror -o $(OUT)/demo-mirror
	@test -f $(OUT)/demo.key || $(KPAAS) key generate -o $(OUT)/demo
	$(KPAAS) bake bundles/demo.yaml --mirror $(OUT)/mirror --mirror $(OUT)/demo-mirror --offline --sign-key $(OUT)/demo.key -o $(OUT)/demo-bundle
	$(KPAAS) bundle verify $(OUT)/demo-bundle --key $(OUT)/demo.pub
	$(KPAAS) bundle inspect $(OUT)/demo-bundle

.PHONY: toolchain
toolchain: ## Build the Kubernetes node toolchain and images from Go modules into out/mirror (cached)
	$(GO) run ./builder/cmd/kpaas toolchain build --out $(OUT)/mirror

.PHONY: lint-bundles
lint-bundles: build ## Lint every bundle manifest in bundles/
	$(KPAAS) bundle lint bundles/*.yaml

.PHONY: test
test: ## Run the tests (installs host tools first when run as root in CI)
	hack/test.sh

.PHONY: qemu-test
qemu-test: ## Boot the OS image under QEMU (software emulation; a few minutes; root)
	$(GO) test -tags qemu -v -timeout 30m ./qemu-tests/

.PHONY: bench
bench: ## Run the benchmarks against the named peers (skopeo, crane, distribution)
	hack/bench.sh
	hack/bench-registry.sh
	hack/bench-media.sh

.PHONY: verify
verify: ## gofmt, go vet, go mod tidy and generated files are clean
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo 'gofmt needed'; exit 1; }
	$(GO) vet ./...
	$(GO) mod tidy -diff

.PHONY: clean
clean: ## Remove out/
	rm -rf $(OUT)
