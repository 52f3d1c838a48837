# kpaas-appliance — `make help` lists the targets.
SHELL := /bin/bash
.DELETE_ON_ERROR:
.DEFAULT_GOAL := help

GO        ?= go
OUT       ?= out
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X kpaas.dev/appliance/builder/cli.Version=$(VERSION)
KPAAS     := $(OUT)/bin/kpaas
# HARBOR_PORTAL=1: the toolchain also builds Harbor's web portal (npm).
HARBOR_PORTAL ?=
TOOLCHAIN_FLAGS := $(if $(HARBOR_PORTAL),--harbor-portal)
export CGO_ENABLED ?= 0

.PHONY: help
help: ## List the targets
	@awk 'BEGIN{FS=":.*## "} /^[a-zA-Z0-9_-]+:.*## /{printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

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
	$(KPAAS) toolchain build --out $(OUT)/mirror $(TOOLCHAIN_FLAGS)
	$(KPAAS) os build images/debian-12.yaml -o $(OUT)/os
	$(GO) run ./bundles/demo/mkmirror -o $(OUT)/demo-mirror
	@test -f $(OUT)/demo.key || $(KPAAS) key generate -o $(OUT)/demo
	$(KPAAS) bake bundles/demo.yaml --mirror $(OUT)/mirror --mirror $(OUT)/os --mirror $(OUT)/demo-mirror --offline --sign-key $(OUT)/demo.key -o $(OUT)/demo-bundle
	$(KPAAS) bundle verify $(OUT)/demo-bundle --key $(OUT)/demo.pub
	$(KPAAS) bundle inspect $(OUT)/demo-bundle
	$(KPAAS) image build --bundle $(OUT)/demo-bundle -o $(OUT)/demo --format qcow2,iso --disk-size 12G --key $(OUT)/demo.pub
	@test -f $(OUT)/demo-site/secrets/token || $(KPAAS) cluster init --from bundles/demo/cluster.yaml --bundle bundles/demo.yaml -o $(OUT)/demo-site
	for n in cp1 w1 w2; do $(KPAAS) cluster config-disk $(OUT)/demo-site --node $$n -o $(OUT)/demo-site/$$n-config.img; done
	@echo "demo: media out/demo.qcow2 and out/demo.iso; cluster site out/demo-site; boot it with: make demo-cluster"

.PHONY: demo-cluster
demo-cluster: ## Boot the demo cluster (3 nodes from out/demo.qcow2) under QEMU and print how to reach it with kubectl; Ctrl-C stops it
	hack/install-deps.sh cluster
	$(GO) run ./qemu-tests/cmd/demo-cluster --image $(OUT)/demo.qcow2 --site $(OUT)/demo-site --dir $(OUT)/demo-cluster --kubectl $(OUT)/mirror/files/kubectl

.PHONY: e2e
e2e: toolchain os ## Run every QEMU cluster scenario (software emulation; four to six hours on 2 cores; root)
	KPAAS_E2E=1 KPAAS_CLUSTER_FIGURES=$(abspath $(OUT))/cluster-figures.jsonl $(GO) test -tags qemu -v -count=1 -timeout 420m -run 'TestCluster' ./qemu-tests/

.PHONY: os
os: ## Build the node OS image with this tree's agent into out/os (root; cached: seconds when only the agent changed); the QEMU tests boot it
	$(GO) run ./builder/cmd/kpaas os build images/debian-12.yaml -o $(OUT)/os

.PHONY: toolchain
toolchain: ## Build the Kubernetes node toolchain and images from Go modules into out/mirror (cached; HARBOR_PORTAL=1 adds Harbor's web portal)
	$(GO) run ./builder/cmd/kpaas toolchain build --out $(OUT)/mirror $(TOOLCHAIN_FLAGS)

.PHONY: harbor-portal
harbor-portal: ## The toolchain with Harbor's web portal built from its npm sources (Node.js 20.19+, npm registry; 10–15 min more on 2 cores)
	$(MAKE) toolchain HARBOR_PORTAL=1

.PHONY: lint-bundles
lint-bundles: build ## Lint every bundle manifest in bundles/
	$(KPAAS) bundle lint bundles/*.yaml

.PHONY: test
test: ## Run the tests (installs host tools first when run as root in CI)
	hack/test.sh

.PHONY: ci-cold
ci-cold: ## CI's run on a clean clone with every cache empty (toolchain from nothing; about 80 minutes on 2 cores; run alone): hack/ci-cold.sh [WORK]
	hack/ci-cold.sh

.PHONY: qemu-test
qemu-test: toolchain os ## Boot the OS image under QEMU (software emulation; a few minutes; root)
	$(GO) test -tags qemu -v -timeout 30m ./qemu-tests/

.PHONY: bench
bench: ## Run the benchmarks against the named peers (skopeo, crane, distribution)
	hack/bench.sh
	hack/bench-registry.sh
	hack/bench-media.sh
	hack/bench-harbor.sh

.PHONY: verify
verify: ## gofmt, go vet, go mod tidy and generated files are clean (also in packer/)
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo 'gofmt needed'; exit 1; }
	$(GO) vet ./...
	$(GO) mod tidy -diff
	cd packer && $(GO) vet ./... && $(GO) mod tidy -diff
	hack/verify-generated.sh

# The Packer plugin (packer/, its own Go module) and a real Packer to test it.
PLUGIN_VERSION := $(shell sed -n 's/^\tVersion *= "\(.*\)"/\1/p' packer/version/version.go)
PLUGIN_SOURCE  := github.com/k-paas/kpaas
PLUGIN_DIR     := $(OUT)/packer/plugins
PLUGIN_BIN     := $(PLUGIN_DIR)/$(PLUGIN_SOURCE)/packer-plugin-kpaas_v$(PLUGIN_VERSION)_x5.0_linux_amd64
PACKER_VERSION := v1.9.5
KPAAS_CACHE    ?= $(HOME)/.cache/kpaas
PACKER         := $(KPAAS_CACHE)/packer/$(PACKER_VERSION)/packer

.PHONY: generate
generate: ## Regenerate the Packer plugin's HCL2 specs (packer-sdc, a tool of packer/go.mod)
	cd packer && $(GO) generate ./...

.PHONY: packer-plugin
packer-plugin: ## Build packer-plugin-kpaas and install it for Packer 1.9.5 offline into out/packer/plugins (PACKER_PLUGIN_PATH)
	cd packer && $(GO) build -trimpath -ldflags '-s -w -X kpaas.dev/appliance/packer/version.Version=$(PLUGIN_VERSION)' -o ../$(PLUGIN_BIN) .
	cd $(dir $(PLUGIN_BIN)) && sha256sum $(notdir $(PLUGIN_BIN)) | cut -d' ' -f1 > $(notdir $(PLUGIN_BIN))_SHA256SUM
	@echo "installed $(PLUGIN_BIN); use it with PACKER_PLUGIN_PATH=$(abspath $(PLUGIN_DIR))"

.PHONY: packer
packer: $(PACKER) ## Build Packer v1.9.5 (the last MPL release) from the Go module proxy into the cache (10-30 min cold)

$(PACKER):
	mkdir -p $(dir $@)
	GOBIN=$(abspath $(dir $@)) nice -n 15 $(GO) install github.com/hashicorp/packer@$(PACKER_VERSION)

.PHONY: packer-test
packer-test: packer packer-plugin ## Run the plugin under a real Packer: media from the demo bundle, a provisioned VM, both booted under QEMU (root)
	@test -f $(OUT)/demo-bundle/kpaas-lock.json || { echo "packer-test needs $(OUT)/demo-bundle with its OS image: make demo (see bundles/demo.yaml)"; exit 1; }
	cd packer && PACKER_ACC=1 CHECKPOINT_DISABLE=1 PATH=$(dir $(PACKER)):$$PATH \
		PACKER_PLUGIN_PATH=$(abspath $(PLUGIN_DIR)) KPAAS_DEMO_BUNDLE=$(abspath $(OUT)/demo-bundle) \
		$(GO) test -p 1 -count=1 -v -timeout 90m -run 'TestAcc' ./...

.PHONY: clean
clean: ## Remove out/
	rm -rf $(OUT)
