#!/usr/bin/env bash
# Fails when the Packer plugin's generated HCL2 specs (packer/**/*.hcl2spec.go)
# are stale: regenerates them (make generate) and compares. The regenerated
# files are left in place, so a failure is fixed by committing them.
set -euo pipefail
cd "$(dirname "$0")/../packer"
sums() { find . -name '*.hcl2spec.go' -print0 | sort -z | xargs -0 sha256sum; }
before=$(sums)
go generate ./...
after=$(sums)
if [ "$before" != "$after" ]; then
  diff <(echo "$before") <(echo "$after") || true
  echo "verify: the generated HCL2 specs were stale (regenerated now: commit them; make generate)" >&2
  exit 1
fi
echo "verify: generated HCL2 specs are up to date"
