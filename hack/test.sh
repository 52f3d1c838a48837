#!/usr/bin/env bash
# The test command (`make test`, .ci/run): installs what the tests need (as
# root), builds the Kubernetes toolchain from Go modules (cached: seconds
# when warm, about half an hour cold on 2 cores) so the tests that run a
# real API server, containerd and kubelet never skip, then runs every test
# (and, as root, the QEMU boots of the media).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
if [ "$(id -u)" = 0 ]; then
  hack/install-deps.sh
  # The toolchain's Debian layer (iptables, ipset, conntrack) is fetched
  # with apt; make sure the lists exist.
  ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1 || apt-get update -qq
  # As root, also start a real kubelet against the test API server.
  export KUBETEST_NODE=1
fi
go vet ./...
go run ./builder/cmd/kpaas toolchain build --out out/mirror
echo "test: toolchain ready after $(( $(date +%s) - start ))s"
go test -count=1 -timeout 40m ./...
# As root, also boot the media under QEMU (software emulation): the OS
# image (mmdebstrap, cached), raw, qcow2 and ISO in BIOS and UEFI paths,
# each to the agent's ready line. About 4 minutes.
if [ "$(id -u)" = 0 ] && command -v qemu-system-x86_64 >/dev/null; then
  go test -count=1 -tags qemu -timeout 30m ./qemu-tests/
fi
echo "test: done after $(( $(date +%s) - start ))s"
