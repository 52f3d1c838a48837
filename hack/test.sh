#!/usr/bin/env bash
# The test command (`make test`, .ci/run): installs what the tests need (as
# root), builds the Kubernetes toolchain from Go modules (cached: seconds
# when warm, about half an hour cold on 2 cores) so the tests that run a
# real API server, containerd and kubelet never skip, then runs every test
# (and, as root, the QEMU boots of the media).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
# Installs what is missing (as root: everything). As another user, the
# toolchain's packages must be there (else this names them and fails here,
# not half an hour into the build); tests whose tools are missing skip,
# except under CI=true, where they fail.
if [ "$(id -u)" = 0 ]; then
  hack/install-deps.sh
else
  hack/install-deps.sh demo
fi
if [ "$(id -u)" = 0 ]; then
  # As root, also start a real kubelet against the test API server.
  export KUBETEST_NODE=1
fi
go vet ./...
go run ./builder/cmd/kpaas toolchain build --out out/mirror
echo "test: toolchain ready after $(( $(date +%s) - start ))s"
go test -count=1 -timeout 40m ./...
# The Packer plugin is its own Go module (packer/): its vet and unit tests.
# Its acceptance tests, which build Packer itself (10-30 min cold), run
# only with PACKER_ACC=1: make packer-test.
(cd packer && go vet ./... && go test -count=1 -timeout 10m ./...)
# As root, also boot the media under QEMU (software emulation): the OS
# image (mmdebstrap, cached), raw, qcow2 and ISO in BIOS and UEFI paths,
# each to the agent's ready line. About 4 minutes.
if [ "$(id -u)" = 0 ] && command -v qemu-system-x86_64 >/dev/null; then
  go test -count=1 -tags qemu -timeout 30m ./qemu-tests/
fi
echo "test: done after $(( $(date +%s) - start ))s"
