#!/usr/bin/env bash
# The registry benchmarks (docs/benchmarks.md): the seed against a
# distribution v3 registry serving the same content to the same client, and
# kpaas push against skopeo copy into distribution, all on 127.0.0.1 in the
# same run. `make bench` runs it after hack/bench.sh.
#
#   BENCH_SCALE         size of the image set: full (~1.2 GiB unique, default), small or a factor
#   BENCH_REPS          repetitions of each timed mode (default 3, at most 20)
#   BENCH_REPUSH_SCALE  size of the 100-reference re-push set (default small)
#   BENCH_P99_ROUNDS    requests per puller and repetition in the p99 test (default 40, at most 200)
#   BENCH_GO            1 (default): also run the in-process Go benchmarks of internal/seed
#   BENCH_OUT           output folder (default out/bench)
#   BENCH_KEEP          1: keep the bundles and registries in $BENCH_OUT/registry-work
#
# Results: $BENCH_OUT/registry-results.md (also printed) and registry-results.tsv.
# Only ratios between tools measured side by side mean anything on a shared
# machine; the absolute times are printed for context.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/bench-lib.sh

SCALE=${BENCH_SCALE:-full}
REPS=${BENCH_REPS:-3}
REPUSH_SCALE=${BENCH_REPUSH_SCALE:-small}
P99_ROUNDS=${BENCH_P99_ROUNDS:-40}
OUT=${BENCH_OUT:-out/bench}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
BIN=$OUT/bin
WORK=$OUT/registry-work
LOG=$OUT/log/registry
TSV=$OUT/registry-results.tsv
REPORT=$OUT/registry-results.md
CRANE_VERSION=v0.22.1
DIST_VERSION=v3.1.2
PULLERS=64
REPUSH_EXTRA=76 # benchgen -extra: 24 + 76 = 100 references
# The bundles name their images after this host; --registry-rewrite fetches
# them from the local source registry. A host without a port keeps the
# repository paths valid under another registry (SEED/bench.kpaas.test/...).
UPSTREAM=bench.kpaas.test

for v in REPS:20 P99_ROUNDS:200; do
  n=${v%:*} lim=${v#*:}
  val=${!n}
  case $val in '' | *[!0-9]* | 0) echo "BENCH_$n=$val: want a positive number" >&2; exit 2 ;; esac
  [ "$val" -le "$lim" ] || { echo "BENCH_$n=$val: at most $lim" >&2; exit 2; }
done

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.3f", b - a}'; }

# --- peers and builds --------------------------------------------------------

phase "tools"
missing=()
command -v skopeo >/dev/null || missing+=(skopeo)
command -v jq >/dev/null || missing+=(jq)
command -v curl >/dev/null || missing+=(curl)
[ -x /usr/bin/time ] || missing+=(time)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "${missing[*]} missing: apt-get install -y ${missing[*]} (as root)" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
mkdir -p "$BIN" "$WORK" "$LOG"
install_crane "$BIN" "$CRANE_VERSION"
if [ ! -x "$BIN/registry" ] || ! "$BIN/registry" --version 2>/dev/null | grep -q " $DIST_VERSION"; then
  GOBIN=$BIN GOFLAGS=-buildvcs=false go install "github.com/distribution/distribution/v3/cmd/registry@$DIST_VERSION"
fi
go build -o "$BIN/kpaas" ./builder/cmd/kpaas
go build -o "$BIN/benchgen" ./hack/benchgen
SKOPEO_VERSION=$(skopeo --version | awk '{print $3}')

# --- processes and ports -------------------------------------------------------

PIDS=()
PULL_ROOT=
cleanup() {
  local i
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    kill "${PIDS[i]}" 2>/dev/null || true
    wait "${PIDS[i]}" 2>/dev/null || true
  done
  [ -z "$PULL_ROOT" ] || rm -rf "$PULL_ROOT"
  if [ "${BENCH_KEEP:-0}" != 1 ]; then rm -rf "${WORK:?}"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

NEXT_PORT=5255 # hack/bench.sh takes 5055-5154
# take_port: sets PORT to the next free port (each call a new one).
take_port() {
  local p
  for p in $(seq "$NEXT_PORT" 5454); do
    if port_free "$p"; then PORT=$p; NEXT_PORT=$((p + 1)); return; fi
  done
  echo "no free port in $NEXT_PORT-5454" >&2
  exit 1
}

# stop PID: stop a server this script started.
stop() {
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  local keep=() p
  for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

# start_dist NAME: a distribution registry with filesystem storage in a
# fresh $WORK/NAME; sets HOST and SRV_PID.
start_dist() {
  local dir=$WORK/$1
  rm -rf "$dir"
  mkdir -p "$dir/storage"
  take_port
  HOST=127.0.0.1:$PORT
  # The storage section follows the project's example config
  # (cmd/registry/config-example.yml): filesystem, in-memory blob descriptor
  # cache. No auth, no TLS, upload purging off (nothing to purge).
  cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/storage
  cache:
    blobdescriptor: inmemory
  maintenance:
    uploadpurging:
      enabled: false
  tag:
    concurrencylimit: 8
http:
  addr: $HOST
  secret: kpaas-bench
EOF
  OTEL_TRACES_EXPORTER=none "$BIN/registry" serve "$dir/config.yml" >"$LOG/$1.log" 2>&1 &
  SRV_PID=$!
  PIDS+=("$SRV_PID")
  wait_up "$SRV_PID" "$HOST" "$LOG/$1.log"
}

# start_seed BUNDLE NAME: kpaas serve; sets HOST and SRV_PID.
start_seed() {
  take_port
  HOST=127.0.0.1:$PORT
  "$BIN/kpaas" serve "$1" --addr "$HOST" >"$LOG/$2.log" 2>&1 &
  SRV_PID=$!
  PIDS+=("$SRV_PID")
  wait_up "$SRV_PID" "$HOST" "$LOG/$2.log"
}

# --- the image sets and bundles ------------------------------------------------

phase "source registry (crane registry serve, in memory)"
take_port
SRC=127.0.0.1:$PORT
"$BIN/crane" registry serve --address "$SRC" >"$LOG/source.log" 2>&1 &
SRC_PID=$!
PIDS+=("$SRC_PID")
wait_up "$SRC_PID" "$SRC" "$LOG/source.log"

# make_bundle NAME SCALE EXTRA: benchgen into the source registry, then
# kpaas bake into $WORK/NAME. Sets the set.json, refs and bake time.
make_bundle() {
  local name=$1 scale=$2 extra=$3
  phase "image set $name (scale $scale, $((24 + extra)) references)"
  "$BIN/benchgen" -registry "$SRC" -scale "$scale" -extra "$extra" -out "$OUT/$name-set.json" -refs "$LOG/$name-refs.txt"
  local manifest=$OUT/$name-bundle.yaml r
  {
    echo "# Generated by hack/bench-registry.sh: the benchmark image set, every platform kept."
    echo "apiVersion: kpaas.dev/v1alpha1"
    echo "kind: Bundle"
    echo "metadata:"
    echo "  name: $name"
    echo "  version: \"1\""
    echo "platforms: [linux/amd64, linux/arm64]"
    echo "kubernetes:"
    echo "  version: v1.35.4"
    echo "images:"
    while read -r r; do echo "  - $UPSTREAM/${r#"$SRC"/}"; done <"$LOG/$name-refs.txt"
  } >"$manifest"
  sed -n "s|^$SRC/|$UPSTREAM/|p" "$LOG/$name-refs.txt" >"$OUT/$name-refs.txt"
  phase "bake $name"
  rm -rf "${WORK:?}/$name"
  local t0
  t0=$(now)
  "$BIN/kpaas" bake "$manifest" -o "$WORK/$name" --registry-rewrite "$UPSTREAM=$SRC" --insecure-registry "$SRC" --json -q >"$LOG/bake-$name.json"
  echo "   baked $WORK/$name in $(elapsed "$t0") s" >&2
}

make_bundle bench "$SCALE" 0
make_bundle repush "$REPUSH_SCALE" "$REPUSH_EXTRA"
stop "$SRC_PID" # frees the memory of the in-memory registry

BUNDLE=$WORK/bench
UNIQUE_BYTES=$(jq -r .uniqueBytes "$OUT/bench-set.json")
UNIQUE_BLOBS=$(jq -r .uniqueBlobs "$OUT/bench-set.json")
mapfile -t REFS <"$OUT/bench-refs.txt"
mapfile -t REPUSH_REFS <"$OUT/repush-refs.txt"

printf 'test\tmode\trep\twall_s\tnote\tclient_cpu_s\tserver_cpu_s\n' >"$TSV"
# row TEST MODE REP WALL [NOTE [CLIENT_CPU SERVER_CPU]]
row() { printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "${5:-}" "${6:-}" "${7:-}" >>"$TSV"; }
CLK_TCK=$(getconf CLK_TCK)
# cpu PID: user + system CPU seconds a process has used so far.
cpu() { awk -v t="$CLK_TCK" '{printf "%.2f", ($14 + $15) / t}' "/proc/$1/stat"; }

# --- seed vs distribution: pull throughput -------------------------------------

phase "seed vs distribution: populate distribution with kpaas push"
start_dist dist-pull
DIST=$HOST DIST_PID=$SRV_PID
"$BIN/kpaas" push "$BUNDLE" --registry "$DIST" --insecure --json >"$LOG/populate.json"
start_seed "$BUNDLE" seed
SEED=$HOST SEED_PID=$SRV_PID

# Pulls go to tmpfs when there is room, so the client's disk writes do not
# drown the servers' differences.
if [ -d /dev/shm ] && [ -w /dev/shm ] &&
  [ "$(df -B1 --output=avail /dev/shm | tail -1)" -gt $((3 * UNIQUE_BYTES)) ]; then
  PULL_ROOT=$(mktemp -d /dev/shm/kpaas-bench-registry.XXXXXX)
  PULL_FS="on tmpfs"
else
  PULL_FS="on disk"
  PULL_ROOT=$WORK/pull
  mkdir -p "$PULL_ROOT"
fi

# pull HOST DEST: crane pulls every reference of the set from HOST into a
# fresh OCI layout; its user + system CPU seconds go to $LOG/pull.cpu.
pull() {
  local host=$1 dest=$2 r args=()
  rm -rf "$dest"
  for r in "${REFS[@]}"; do args+=("$host/$r"); done
  /usr/bin/time -f '%U %S' -o "$LOG/pull.time" "$BIN/crane" pull --insecure --format=oci "${args[@]}" "$dest" >>"$LOG/pull.log" 2>&1
  awk '{printf "%.2f\n", $1 + $2}' "$LOG/pull.time" >"$LOG/pull.cpu"
}
# layout_digests DIR: the manifest digests of an OCI layout, sorted.
layout_digests() { jq -r '.manifests[].digest' "$1/index.json" | sort -u; }

phase "seed vs distribution: warm-up pulls (the seed hashes each blob once before serving it)"
T0=$(now)
pull "$SEED" "$PULL_ROOT/seed"
row pull-warmup seed 0 "$(elapsed "$T0")"
T0=$(now)
pull "$DIST" "$PULL_ROOT/dist"
row pull-warmup distribution 0 "$(elapsed "$T0")"
if [ "$(layout_digests "$PULL_ROOT/seed")" != "$(layout_digests "$PULL_ROOT/dist")" ]; then
  echo "the seed and distribution served different manifests" >&2
  exit 1
fi
PULL_SAME=$(layout_digests "$PULL_ROOT/seed" | wc -l)

phase "seed vs distribution: $REPS pulls from each with crane, alternating"
for rep in $(seq "$REPS"); do
  order=(seed distribution)
  [ $((rep % 2)) = 1 ] || order=(distribution seed)
  for m in "${order[@]}"; do
    host=$SEED pid=$SEED_PID
    [ "$m" = seed ] || host=$DIST pid=$DIST_PID
    rm -rf "${PULL_ROOT:?}"/*
    sync
    c0=$(cpu "$pid")
    T0=$(now)
    pull "$host" "$PULL_ROOT/$m"
    w=$(elapsed "$T0")
    sc=$(awk -v a="$c0" -v b="$(cpu "$pid")" 'BEGIN {printf "%.2f", b - a}')
    row pull "$m" "$rep" "$w" "" "$(cat "$LOG/pull.cpu")" "$sc"
    printf '   pull %-12s run %d: %6.2f s (CPU: crane %s s, server %s s)\n' "$m" "$rep" "$w" "$(cat "$LOG/pull.cpu")" "$sc" >&2
  done
done
rm -rf "${PULL_ROOT:?}"/*

# --- seed vs distribution: manifest latency under 64 pullers ---------------------

# p99_round HOST FILE: PULLERS connections at once, P99_ROUNDS manifest GETs
# each (by tag, round robin over the set), one curl process; appends one
# "status seconds" line per request to FILE.
ACCEPT='application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json'
p99_round() {
  local host=$1 file=$2 cfg=$LOG/p99-urls.cfg i r
  : >"$cfg"
  for ((i = 0; i < PULLERS * P99_ROUNDS; i++)); do
    r=${REFS[i % ${#REFS[@]}]}
    printf 'url = "http://%s/v2/%s/manifests/%s"\noutput = "/dev/null"\n' "$host" "${r%:*}" "${r##*:}" >>"$cfg"
  done
  curl -sZ --no-progress-meter --parallel-max "$PULLERS" --parallel-immediate -H "Accept: $ACCEPT" \
    -K "$cfg" -w '%{http_code} %{time_total}\n' >>"$file"
}
# pct P FILE: the P-th percentile (nearest rank) of the seconds in FILE, in ms.
pct() { awk '{print $2}' "$2" | sort -g | awk -v p="$1" '{a[NR] = $1} END {i = int(NR * p / 100 + 0.999999); if (i < 1) i = 1; printf "%.2f", a[i] * 1000}'; }

phase "seed vs distribution: manifest GETs, $PULLERS pullers × $P99_ROUNDS requests, $REPS rounds each, alternating"
: >"$LOG/p99-seed.txt"
: >"$LOG/p99-distribution.txt"
for rep in $(seq "$REPS"); do
  order=(seed distribution)
  [ $((rep % 2)) = 1 ] || order=(distribution seed)
  for m in "${order[@]}"; do
    host=$SEED
    [ "$m" = seed ] || host=$DIST
    T0=$(now)
    p99_round "$host" "$LOG/p99-$m.txt"
    w=$(elapsed "$T0")
    row manifests "$m" "$rep" "$w" "$((PULLERS * P99_ROUNDS)) requests"
    printf '   manifests %-12s run %d: %6.2f s for %d requests\n' "$m" "$rep" "$w" $((PULLERS * P99_ROUNDS)) >&2
  done
done
declare -A P50 P99 PMAX BAD NREQ
for m in seed distribution; do
  P50[$m]=$(pct 50 "$LOG/p99-$m.txt")
  P99[$m]=$(pct 99 "$LOG/p99-$m.txt")
  PMAX[$m]=$(pct 100 "$LOG/p99-$m.txt")
  BAD[$m]=$(awk '$1 != 200' "$LOG/p99-$m.txt" | wc -l)
  NREQ[$m]=$(wc -l <"$LOG/p99-$m.txt")
done
stop "$SEED_PID"
DIST_PULL_DIR=$WORK/dist-pull

# --- the in-process Go benchmarks ------------------------------------------------

GO_SEED=
if [ "${BENCH_GO:-1}" = 1 ]; then
  phase "go test ./internal/seed -bench 'PullThroughput|ManifestP99' (in process)"
  if go test ./internal/seed -run '^$' -bench 'BenchmarkPullThroughput|BenchmarkManifestP99' -benchtime 10x -count 1 \
    >"$LOG/go-bench-seed.txt" 2>&1; then
    GO_SEED=$(grep '^Benchmark' "$LOG/go-bench-seed.txt" || true)
  else
    echo "   go benchmarks failed; see $LOG/go-bench-seed.txt" >&2
  fi
fi

# --- push: kpaas vs skopeo copy ------------------------------------------------------

# push_MODE BUNDLE HOST REFSFILE: one push of the bundle into HOST.
push_kpaas() {
  "$BIN/kpaas" push "$1" --registry "$2" --insecure --json >"$LOG/push-summary.json"
}
push_skopeo() {
  local r
  while read -r r; do
    skopeo copy -q --all --dest-tls-verify=false "oci:$1:$r" "docker://$2/$r" || return
  done <"$3"
}

# tag_digests HOST REFSFILE: "ref digest" of every reference in HOST.
tag_digests() {
  local r
  while read -r r; do
    printf '%s %s\n' "$r" "$(curl -fsSI -H "Accept: $ACCEPT" "http://$1/v2/${r%:*}/manifests/${r##*:}" |
      tr -d '\r' | awk -F': ' 'tolower($1) == "docker-content-digest" {print $2}')"
  done <"$2"
}

phase "push into a fresh distribution registry: kpaas push vs skopeo copy --all per image, $REPS× each, alternating"
tag_digests "$DIST" "$OUT/bench-refs.txt" >"$LOG/digests-bundle.txt" # the kpaas-pushed registry
stop "$DIST_PID"
[ "${BENCH_KEEP:-0}" = 1 ] || rm -rf "$DIST_PULL_DIR"
for rep in $(seq "$REPS"); do
  order=(kpaas skopeo)
  [ $((rep % 2)) = 1 ] || order=(skopeo kpaas)
  for m in "${order[@]}"; do
    start_dist "push-$m"
    sync
    T0=$(now)
    if ! "push_$m" "$BUNDLE" "$HOST" "$OUT/bench-refs.txt" >"$LOG/push-$m-$rep.log" 2>&1; then
      echo "push $m (run $rep) failed:" >&2
      tail -20 "$LOG/push-$m-$rep.log" >&2
      exit 1
    fi
    w=$(elapsed "$T0")
    note=
    [ "$m" != kpaas ] || note="sent $(jq -r .bytesSent "$LOG/push-summary.json") B in $(jq -r .blobsSent "$LOG/push-summary.json") blobs, $(jq -r .blobsMounted "$LOG/push-summary.json") mounted"
    row push "$m" "$rep" "$w" "$note"
    printf '   push %-6s run %d: %6.2f s\n' "$m" "$rep" "$w" >&2
    if [ "$rep" = 1 ]; then tag_digests "$HOST" "$OUT/bench-refs.txt" >"$LOG/digests-$m.txt"; fi
    stop "$SRV_PID"
    [ "${BENCH_KEEP:-0}" = 1 ] || rm -rf "${WORK:?}/push-$m"
  done
done
SAME_KPAAS=$(comm -12 <(sort "$LOG/digests-bundle.txt") <(sort "$LOG/digests-kpaas.txt") | wc -l)
SAME_SKOPEO=$(comm -12 <(sort "$LOG/digests-bundle.txt") <(sort "$LOG/digests-skopeo.txt") | wc -l)

# --- re-push of an unchanged 100-reference bundle ------------------------------------

phase "re-push: ${#REPUSH_REFS[@]} references, first push then $REPS re-pushes"
start_dist repush-target
T0=$(now)
"$BIN/kpaas" push "$WORK/repush" --registry "$HOST" --insecure --json >"$LOG/repush-first.json"
row repush-first kpaas 1 "$(elapsed "$T0")" "sent $(jq -r .bytesSent "$LOG/repush-first.json") B"
for rep in $(seq "$REPS"); do
  T0=$(now)
  "$BIN/kpaas" push "$WORK/repush" --registry "$HOST" --insecure --json >"$LOG/repush-$rep.json"
  w=$(elapsed "$T0")
  row repush kpaas "$rep" "$w" "$(jq -r '"sent \(.bytesSent) B, \(.blobsSent) blobs, \(.manifestsSent) manifests, \(.tagsSet) tags, \(.requests) requests"' "$LOG/repush-$rep.json")"
  printf '   re-push run %d: %6.2f s\n' "$rep" "$w" >&2
done
REPUSH_SENT=$(for rep in $(seq "$REPS"); do jq -r '.blobsSent + .manifestsSent + .tagsSet' "$LOG/repush-$rep.json"; done | sort -u | tr '\n' ' ' | sed 's/ $//')
REPUSH_REQS=$(jq -r .requests "$LOG/repush-1.json")
REPUSH_IMAGES=$(jq -r .images "$LOG/repush-1.json")
stop "$SRV_PID"

# --- summary -------------------------------------------------------------------------

# col TEST MODE [FIELD]: one column (default: the wall time) of the TSV rows.
col() { awk -F'\t' -v t="$1" -v m="$2" -v f="${3:-4}" 'NR > 1 && $1 == t && $2 == m {print $f}' "$TSV"; }
median() { sort -g | awk '{a[NR] = $1} END {if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
range() { sort -g | awk 'NR == 1 {lo = $1} {hi = $1} END {printf "%s–%s", lo, hi}'; }
div() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "n/a"}'; }
mibps() { awk -v b="$UNIQUE_BYTES" -v s="$1" 'BEGIN {if (s > 0) printf "%.0f", b / 1048576 / s; else print "n/a"}'; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN {exit !(a >= b)}'; }
lt() { awk -v a="$1" -v b="$2" 'BEGIN {exit !(a < b)}'; }
verdict() { if "$@"; then echo met; else echo "**missed**"; fi; }
# gometric NAME: a metric of the Go benchmarks' output.
gometric() { printf '%s\n' "$GO_SEED" | awk -v n="$1" '{for (i = 2; i <= NF; i++) if ($i == n) print $(i - 1)}' | head -1; }

PULL_SEED=$(col pull seed | median)
PULL_DIST=$(col pull distribution | median)
R_PULL=$(div "$PULL_DIST" "$PULL_SEED")
R_P99=$(div "${P99[seed]}" "${P99[distribution]}")
PUSH_KPAAS=$(col push kpaas | median)
PUSH_SKOPEO=$(col push skopeo | median)
R_PUSH=$(div "$PUSH_SKOPEO" "$PUSH_KPAAS")
REPUSH=$(col repush kpaas | median)
REPUSH_MAX=$(col repush kpaas | sort -g | tail -1)

{
  echo "# Registry benchmark results"
  echo
  echo "Measured by \`hack/bench-registry.sh\` on $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, Go $(go env GOVERSION | sed 's/^go//'),"
  echo "kpaas $(git describe --tags --always --dirty 2>/dev/null || echo dev), distribution ${DIST_VERSION#v} (filesystem storage, in-memory blob descriptor cache),"
  echo "skopeo $SKOPEO_VERSION, crane ${CRANE_VERSION#v}. Everything on 127.0.0.1; medians of $REPS runs, min–max in brackets."
  echo
  echo "Image set (scale $SCALE): ${#REFS[@]} references, $(jq -r .platformManifests "$OUT/bench-set.json") platform images,"
  echo "$UNIQUE_BLOBS unique blobs, $UNIQUE_BYTES unique bytes ($(awk -v b="$UNIQUE_BYTES" 'BEGIN {printf "%.1f", b / 1048576}') MiB), baked by kpaas."
  echo
  echo "## Seed vs distribution, same content, same client"
  echo
  echo "\`crane pull --insecure --format=oci\` of all ${#REFS[@]} references into an empty folder ($PULL_FS),"
  echo "alternating between the two servers after one warm-up pull each; both served the same $PULL_SAME manifests."
  echo "distribution was filled by \`kpaas push\`; both serve the repositories \`HOST/$UPSTREAM/bench/...\`."
  echo
  echo "| server | pull wall s | MiB/s | crane CPU s | server CPU s | warm-up (first) pull s |"
  echo "|---|---|---|---|---|---|"
  printf '| kpaas serve | %s (%s) | %s | %s | %s | %s |\n' "$PULL_SEED" "$(col pull seed | range)" "$(mibps "$PULL_SEED")" \
    "$(col pull seed 6 | median)" "$(col pull seed 7 | median)" "$(col pull-warmup seed)"
  printf '| distribution | %s (%s) | %s | %s | %s | %s |\n' "$PULL_DIST" "$(col pull distribution | range)" "$(mibps "$PULL_DIST")" \
    "$(col pull distribution 6 | median)" "$(col pull distribution 7 | median)" "$(col pull-warmup distribution)"
  echo
  echo "Manifest GETs by tag with $PULLERS concurrent connections (one curl process, \`-Z --parallel-max $PULLERS\`),"
  echo "$P99_ROUNDS requests per connection and round, $REPS rounds per server, alternating:"
  echo
  echo "| server | requests | not 200 | p50 ms | p99 ms | max ms |"
  echo "|---|---|---|---|---|---|"
  for m in seed distribution; do
    printf '| %s | %s | %s | %s | %s | %s |\n' "$m" "${NREQ[$m]}" "${BAD[$m]}" "${P50[$m]}" "${P99[$m]}" "${PMAX[$m]}"
  done
  if [ -n "$GO_SEED" ]; then
    echo
    echo "In process (\`go test ./internal/seed -bench 'PullThroughput|ManifestP99' -benchtime 10x\`; one 4 × 8 MiB image,"
    echo "go-containerregistry client; $PULLERS goroutines × 20 manifest GETs per round):"
    echo
    echo '```'
    printf '%s\n' "$GO_SEED"
    echo '```'
  fi
  echo
  echo "## Push into a fresh distribution registry"
  echo
  echo "Each run starts a new registry on an empty folder. kpaas: \`kpaas push BUNDLE --registry HOST --insecure\`."
  echo "skopeo: \`skopeo copy --all --dest-tls-verify=false oci:BUNDLE:REF docker://HOST/REF\`, one process per"
  echo "reference, one after the other (skopeo $SKOPEO_VERSION's \`sync\` cannot read an OCI layout). skopeo re-serialises"
  echo "OCI indexes (it drops \`artifactType\` from their descriptors, and \`--preserve-digests\` refuses them), so"
  echo "the tags of the multi-arch references get other digests than the bundle's."
  echo
  echo "| tool | wall s | MiB/s | tags with the bundle's digest |"
  echo "|---|---|---|---|"
  printf '| kpaas push | %s (%s) | %s | %s/%s |\n' "$PUSH_KPAAS" "$(col push kpaas | range)" "$(mibps "$PUSH_KPAAS")" "$SAME_KPAAS" "${#REFS[@]}"
  printf '| skopeo copy | %s (%s) | %s | %s/%s |\n' "$PUSH_SKOPEO" "$(col push skopeo | range)" "$(mibps "$PUSH_SKOPEO")" "$SAME_SKOPEO" "${#REFS[@]}"
  echo
  echo "## Re-push of an unchanged bundle"
  echo
  echo "${#REPUSH_REFS[@]} references ($REPUSH_IMAGES images, scale $REPUSH_SCALE, $(jq -r .uniqueBlobs "$OUT/repush-set.json") unique blobs,"
  echo "$(awk -v b="$(jq -r .uniqueBytes "$OUT/repush-set.json")" 'BEGIN {printf "%.1f", b / 1048576}') MiB) pushed once ($(col repush-first kpaas) s), then again $REPS×:"
  echo "$(col repush kpaas | median) s median ($(col repush kpaas | range)); $REPUSH_REQS requests; blobs + manifests + tags sent: $REPUSH_SENT."
  echo
  echo "## Ratios and goals"
  echo
  echo "| measure | value | goal | verdict |"
  echo "|---|---|---|---|"
  echo "| pull throughput seed / distribution (distribution wall ÷ seed wall) | ${R_PULL}× | ≥ 1.0× | $(verdict ge "$R_PULL" 1.0) |"
  echo "| manifest p99, $PULLERS pullers: seed / distribution | ${P99[seed]} / ${P99[distribution]} ms (${R_P99}×) | reported | |"
  if [ -n "$GO_SEED" ]; then
    echo "| in process: seed/distribution throughput, p99 ratio | $(gometric seed/distribution-throughput)×, $(gometric seed/distribution-p99)× | (info) | |"
  fi
  echo "| push: skopeo wall ÷ kpaas wall | ${R_PUSH}× | ≥ 1.5× | $(verdict ge "$R_PUSH" 1.5) |"
  echo "| re-push of ${#REPUSH_REFS[@]} unchanged references | $REPUSH s (max $REPUSH_MAX s), sent $REPUSH_SENT | < 5 s, nothing sent | $(verdict eval "lt $REPUSH_MAX 5 && [ '$REPUSH_SENT' = 0 ]") |"
  echo
  echo "Raw rows: registry-results.tsv; logs, per-request latencies and JSON summaries: log/registry/."
} >"$REPORT"

echo
cat "$REPORT"
echo
echo "results: $REPORT"
