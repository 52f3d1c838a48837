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
demo: demo-deps build ## Bake the demo bundle and write bootable demo media (out/demo.qcow2, out/demo.iso) and the demo cluster's site (out/demo-site); root for the OS image
	$(KPAAS) toolchain build --out $(OUT)/mirror
	$(KPAAS) os build images/debian-12.yaml -o $(OUT)/os
	$(GO) run ./bundles/demo/mkmirror -o $(OUT)/demo-mirror
	@test -f $(OUT)/demo.key || $(KPAAS) key generate -o $(OUT)/demo
	$(KPAAS) bake bundles/demo.yaml --mirror $(OUT)/mirror --mirror $(OUT)/os --mirror $(OUT)/demo-mirror --offline --sign-key $(OUT)/demo.key -o $(OUT)/demo-bundle
	$(KPAAS) bundle verify $(OUT)/demo-bundle --key $(OUT)/demo.pub
	$(KPAAS) bundle inspect $(OUT)/demo-bundle
	$(KPAAS) image build --bundle $(OUT)/demo-bundle -o $(OUT)/demo --format qcow2,iso --disk-size 12G --key $(OUT)/demo.pub
	@test -f $(OUT)/demo-site/secrets/token || $(KPAAS) cluster init --from bundles/demo/cluster.yaml -o $(OUT)/demo-site
	for n in cp1 w1 w2; do $(KPAAS) cluster config-disk $(OUT)/demo-site --node $$n -o $(OUT)/demo-site/$$n-config.img; done
	@echo "demo: media out/demo.qcow2 and out/demo.iso; cluster site out/demo-site; boot it with: make demo-cluster"

.PHONY: demo-cluster
demo-cluster: ## Boot the demo cluster (3 nodes from out/demo.qcow2) under QEMU and print how to reach it with kubectl; Ctrl-C stops it
	hack/install-deps.sh cluster
	$(GO) run ./qemu-tests/cmd/demo-cluster --image $(OUT)/demo.qcow2 --site $(OUT)/demo-site --dir $(OUT)/demo-cluster --kubectl $(OUT)/mirror/files/kubectl

.PHONY: e2e
e2e: ## Run every QEMU cluster scenario (software emulation; up to two hours; root)
	KPAAS_E2E=1 KPAAS_CLUSTER_FIGURES=$(abspath $(OUT))/cluster-figures.jsonl $(GO) test -tags qemu -v -count=1 -timeout 150m -run 'TestCluster' ./qemu-tests/

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
