#!/usr/bin/env bash
# ci-cold: CI's run (`CI=true bash .ci/run`) on a clean clone of HEAD with
# every cache of the project empty: Go's build and module caches, kpaas's
# (toolchain, OS image bases) and the user cache folder, each a fresh
# folder under WORK (default a new temporary folder). What it cannot empty
# is what the machine already has installed (Debian packages, Go itself).
# About 80 minutes of both cores on a 2-core machine: run it alone, not beside
# QEMU. The log is WORK/ci.log; the last line says the total.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-$(mktemp -d /tmp/kpaas-ci-cold.XXXXXX)}
mkdir -p "$work"
rm -rf "$work/clone"
git clone -q . "$work/clone"
for d in gocache gomodcache kpaas-cache xdg-cache; do
  rm -rf "${work:?}/$d" && mkdir -p "$work/$d"
done
echo "ci-cold: clone of $(git rev-parse --short HEAD) in $work/clone, empty caches in $work; log $work/ci.log"
start=$(date +%s)
set +e
(
  cd "$work/clone" &&
    env CI=true GOCACHE="$work/gocache" GOMODCACHE="$work/gomodcache" \
      KPAAS_CACHE="$work/kpaas-cache" XDG_CACHE_HOME="$work/xdg-cache" \
      bash .ci/run </dev/null
) 2>&1 | tee "$work/ci.log" | grep --line-buffered -E '^test: |^(--- |ok |FAIL)'
status=${PIPESTATUS[0]}
set -e
echo "ci-cold: exit $status after $(( $(date +%s) - start ))s (90 min is CI's limit, 80 the goal)" | tee -a "$work/ci.log"
# The module cache's files are read-only: let the folder be removed.
chmod -R u+w "$work/gomodcache" 2>/dev/null || true
exit "$status"
