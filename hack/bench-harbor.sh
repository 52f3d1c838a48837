#!/usr/bin/env bash
# The Harbor push benchmark (docs/benchmarks.md): the demo bundle's images
# pushed into a real Harbor built from its sources (hack/harborlocal) on
# 127.0.0.1, by `kpaas push --harbor` and by `skopeo copy` per image, into
# fresh projects, alternating, in the same run; then a no-op re-push.
# `make bench` runs it after the other benchmark scripts.
#
#   BENCH_REPS   repetitions of each timed mode (default 3, at most 20)
#   BENCH_OUT    output folder (default out/bench)
#
# Needs the toolchain (make toolchain: Harbor's binaries and the mirror),
# the OS image (out/os), PostgreSQL 15, Redis, skopeo, jq and curl.
# Results: $BENCH_OUT/harbor-results.md (also printed) and harbor-results.tsv.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/bench-lib.sh

REPS=${BENCH_REPS:-3}
case $REPS in '' | *[!0-9]* | 0) echo "BENCH_REPS=$REPS: want a positive number" >&2; exit 2 ;; esac
[ "$REPS" -le 20 ] || { echo "BENCH_REPS=$REPS: at most 20" >&2; exit 2; }
OUT=${BENCH_OUT:-out/bench}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
BIN=$OUT/bin
WORK=$OUT/harbor-work
LOG=$OUT/log/harbor
TSV=$OUT/harbor-results.tsv
REPORT=$OUT/harbor-results.md
mkdir -p "$BIN" "$WORK" "$LOG"

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.3f", b - a}'; }

phase "tools"
missing=()
for c in skopeo jq curl redis-server; do command -v "$c" >/dev/null || missing+=("$c"); done
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql-15)
if [ ${#missing[@]} -gt 0 ]; then
  echo "missing: ${missing[*]} (hack/install-deps.sh installs them as root)" >&2
  exit 1
fi
for d in out/mirror/files/SHA256SUMS out/os/index.json; do
  [ -e "$d" ] || { echo "$d is missing: run make toolchain and kpaas os build images/debian-12.yaml -o out/os" >&2; exit 1; }
done
go build -o "$BIN/kpaas" ./builder/cmd/kpaas
go build -o "$BIN/harborlocal" ./hack/harborlocal

phase "bake the demo bundle"
if [ ! -f "$WORK/demo-bundle/kpaas-lock.json" ]; then
  go run ./bundles/demo/mkmirror -o "$WORK/demo-mirror" >"$LOG/mkmirror.log" 2>&1
  "$BIN/kpaas" bake bundles/demo.yaml --mirror out/mirror --mirror out/os --mirror "$WORK/demo-mirror" --offline \
    -o "$WORK/demo-bundle" >"$LOG/bake.log" 2>&1
fi
BUNDLE=$WORK/demo-bundle
# What both tools push: what kpaas push sends (the bundle's images and
# charts; the OS image is not an image artifact).
jq -r '.artifacts[] | select(.kind == "image" or .kind == "chart") | .ref' "$BUNDLE/kpaas-lock.json" >"$WORK/refs.txt"
NREFS=$(wc -l <"$WORK/refs.txt")
BYTES=$(jq -r '[.artifacts[] | select(.kind == "image" or .kind == "chart") | .size // 0] | add' "$BUNDLE/kpaas-lock.json")

phase "start Harbor"
rm -f "$WORK/harbor.json"
"$BIN/harborlocal" -o "$WORK/harbor.json" >"$LOG/harborlocal.log" 2>&1 &
HARBOR_PID=$!
trap 'kill "$HARBOR_PID" 2>/dev/null; wait "$HARBOR_PID" 2>/dev/null || true' EXIT
for _ in $(seq 600); do
  [ -s "$WORK/harbor.json" ] && break
  kill -0 "$HARBOR_PID" 2>/dev/null || { echo "harborlocal exited:" >&2; tail -20 "$LOG/harborlocal.log" >&2; exit 1; }
  sleep 0.5
done
[ -s "$WORK/harbor.json" ] || { echo "Harbor did not become healthy" >&2; exit 1; }
URL=$(jq -r .url "$WORK/harbor.json")
HOST=$(jq -r .host "$WORK/harbor.json")
USER_=$(jq -r .user "$WORK/harbor.json")
export KPAAS_REGISTRY_PASSWORD
KPAAS_REGISTRY_PASSWORD=$(jq -r .password "$WORK/harbor.json")

create_project() {
  curl -fsS -u "$USER_:$KPAAS_REGISTRY_PASSWORD" -H 'Content-Type: application/json' \
    -d "{\"project_name\": \"$1\", \"metadata\": {\"public\": \"false\"}}" "$URL/api/v2.0/projects" >/dev/null
}

# push_MODE PROJECT: every image of the bundle into PROJECT (reference
# path without its registry, as kpaas push --project places it).
push_kpaas() {
  "$BIN/kpaas" push "$BUNDLE" --registry "$HOST" --insecure --harbor --project "$1" --username "$USER_" --json >"$LOG/push-summary.json"
}
push_skopeo() {
  local r path
  create_project "$1"
  while read -r r; do
    path=${r#*/}
    skopeo copy -q --all --dest-tls-verify=false --dest-creds "$USER_:$KPAAS_REGISTRY_PASSWORD" \
      "oci:$BUNDLE:$r" "docker://$HOST/$1/$path" || return
  done <"$WORK/refs.txt"
}

printf 'phase\tmode\trun\tseconds\tnote\n' >"$TSV"
row() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "${5:-}" >>"$TSV"; }

phase "push $NREFS images and charts into fresh Harbor projects: kpaas push --harbor vs skopeo copy per image, $REPS× each, alternating"
for rep in $(seq "$REPS"); do
  order=(kpaas skopeo)
  [ $((rep % 2)) = 1 ] || order=(skopeo kpaas)
  for m in "${order[@]}"; do
    sync
    T0=$(now)
    if ! "push_$m" "$m-$rep" >"$LOG/push-$m-$rep.log" 2>&1; then
      echo "push $m (run $rep) failed:" >&2
      tail -20 "$LOG/push-$m-$rep.log" >&2
      exit 1
    fi
    w=$(elapsed "$T0")
    row push "$m" "$rep" "$w"
    printf '   push %-6s run %d: %6.2f s\n' "$m" "$rep" "$w" >&2
  done
done

phase "no-op re-push into the project of kpaas's first run, $REPS×"
for rep in $(seq "$REPS"); do
  T0=$(now)
  push_kpaas kpaas-1 >"$LOG/repush-$rep.log" 2>&1
  w=$(elapsed "$T0")
  row repush kpaas "$rep" "$w" "$(jq -r '"\(.blobsSent) blobs sent, \(.requests) requests"' "$LOG/push-summary.json")"
done

# Every digest Harbor reports equals the bundle's, for both tools; the
# references whose digest differs go to $WORK/differ-PROJECT.txt.
phase "check digests"
same() {
  local r n=0 path want got
  : >"$WORK/differ-$1.txt"
  while read -r r; do
    path=${r#*/}
    want=$(jq -r --arg r "$r" '.artifacts[] | select(.ref == $r) | .digest' "$BUNDLE/kpaas-lock.json")
    got=$(curl -fsS -u "$USER_:$KPAAS_REGISTRY_PASSWORD" \
      "$URL/api/v2.0/projects/$1/repositories/$(printf '%s' "${path%:*}" | sed 's|/|%252F|g')/artifacts/${path##*:}" | jq -r .digest)
    if [ "$want" = "$got" ]; then
      n=$((n + 1))
    else
      echo "$r: Harbor has $got, the bundle $want" >>"$WORK/differ-$1.txt"
    fi
  done <"$WORK/refs.txt"
  echo "$n"
}
SAME_KPAAS=$(same kpaas-1)
SAME_SKOPEO=$(same skopeo-1)

col() { awk -F'\t' -v t="$1" -v m="$2" 'NR > 1 && $1 == t && $2 == m {print $4}' "$TSV"; }
median() { sort -g | awk '{a[NR] = $1} END {if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
range() { sort -g | awk 'NR == 1 {lo = $1} {hi = $1} END {printf "%s–%s", lo, hi}'; }
K=$(col push kpaas | median)
S=$(col push skopeo | median)
R=$(col repush kpaas | median)
RATIO=$(awk -v s="$S" -v k="$K" 'BEGIN {printf "%.2f", s / k}')
{
  echo "### Push into a real Harbor ($(date -u +%Y-%m-%d))"
  echo
  echo "The demo bundle's $NREFS images and charts ($(awk -v b="$BYTES" 'BEGIN {printf "%.0f", b / 1048576}') MiB as the lock counts them) pushed into Harbor v2.15.2"
  echo "built from its sources (core, registry, registryctl, jobservice; Debian's PostgreSQL 15 and Redis 7) on 127.0.0.1,"
  echo "into a fresh project per run, the two tools alternating; medians of $REPS runs, min–max in brackets."
  echo "skopeo $(skopeo --version | awk '{print $3}'): one \`skopeo copy --all\` per reference into a project created beforehand."
  echo
  echo "| | seconds | digests equal to the bundle's |"
  echo "|---|---|---|"
  echo "| kpaas push --harbor | $K ($(col push kpaas | range)) | $SAME_KPAAS/$NREFS |"
  echo "| skopeo copy | $S ($(col push skopeo | range)) | $SAME_SKOPEO/$NREFS |"
  echo "| kpaas push, no-op re-push | $R ($(col repush kpaas | range)) | |"
  echo
  echo "| ratio | value | goal |"
  echo "|---|---|---|"
  echo "| push: skopeo wall ÷ kpaas wall | ${RATIO}× | ≥ 1.5× |"
  for t in kpaas skopeo; do
    if [ -s "$WORK/differ-$t-1.txt" ]; then
      echo
      echo "Digests that differ after $t's push:"
      echo
      sed 's/^/- /' "$WORK/differ-$t-1.txt"
    fi
  done
} | tee "$REPORT"
