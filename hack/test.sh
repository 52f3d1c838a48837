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
part=$(date +%s)
lap() { echo "test: $1 in $(( $(date +%s) - part ))s (total $(( $(date +%s) - start ))s)"; part=$(date +%s); }
go vet ./...
lap "go vet"
go run ./builder/cmd/kpaas toolchain build --out out/mirror
lap "toolchain ready"
# As root, the node OS image too (mmdebstrap; its base is cached): the demo
# bundle and the QEMU cluster scenarios boot it.
if [ "$(id -u)" = 0 ]; then
  go run ./builder/cmd/kpaas os build images/debian-12.yaml -o out/os
  lap "OS image ready"
fi
go test -count=1 -timeout 40m ./...
lap "go tests"
# The Packer plugin is its own Go module (packer/): its vet and unit tests.
# Its acceptance tests, which build Packer itself (10-30 min cold), run
# only with PACKER_ACC=1: make packer-test.
(cd packer && go vet ./... && go test -count=1 -timeout 10m ./...)
lap "packer plugin tests"
# As root, also boot under QEMU (software emulation): the media (raw, qcow2
# and ISO in BIOS and UEFI paths, about 5 minutes) and a control plane and a
# worker forming a cluster from the demo media (10-20 minutes). Every VM's
# console is kept in out/test-artifacts.
if [ "$(id -u)" = 0 ] && command -v qemu-system-x86_64 >/dev/null; then
  rm -rf out/test-artifacts
  # -v for the tests' timings; the consoles' lines are left out here.
  set +e
  KPAAS_ARTIFACTS=$PWD/out/test-artifacts go test -count=1 -v -tags qemu -timeout 60m ./qemu-tests/ 2>&1 |
    grep -E '^(=== RUN|--- |PASS|FAIL|ok |panic)|_test\.go:[0-9]+:|^ {4,}'
  status=${PIPESTATUS[0]}
  set -e
  [ "$status" = 0 ] || { echo "test: QEMU tests failed (consoles in out/test-artifacts)"; exit "$status"; }
  lap "QEMU tests"
fi
echo "test: done after $(( $(date +%s) - start ))s"
