#!/usr/bin/env bash
# The media benchmark (docs/benchmarks.md): build raw + qcow2 + ISO
# from a bundle of at least 1 GiB with `kpaas image build`, and in the same
# run the equivalent pipeline of host tools (tar, mksquashfs, mkfs.vfat +
# mcopy, truncate + sfdisk + dd, qemu-img convert, xorriso) on the same
# payload; report the time ratio, the bytes over the payload and, once, the
# time to the agent's first console line under emulation. `make bench` runs it
# after the other benchmarks. Needs root (the host pipeline unpacks the OS
# image's layers with their owners; `kpaas os build` needs root once).
#
#   BENCH_SCALE    size factor of the image set next to the OS image: full
#                  (default: ~1.1 GiB of images + the 190 MB OS image), small, or a factor
#   BENCH_REPS     repetitions of each side, alternating (default 1)
#   BENCH_BOOT     1 (default): boot the kpaas raw image once under OVMF and
#                  once under SeaBIOS (TCG) and time the agent's first console
#                  line; 0: skip
#   BENCH_BOOT_TIMEOUT  seconds (default 900)
#   BENCH_OS_DIR   the OS image layout (default out/os/debian-12; built with
#                  `kpaas os build images/debian-12.yaml` when missing)
#   BENCH_PORT     registry port (default: the first free one from 5355)
#   BENCH_OUT      output folder (default out/bench)
#   BENCH_KEEP     1: keep the bundle and the media in $BENCH_OUT/media-work
#
# Results: $BENCH_OUT/media-results.md (also printed) and media-results.tsv.
# Only ratios between the two sides measured in the same run mean anything
# on a shared machine.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/bench-lib.sh
ROOTDIR=$PWD

SCALE=${BENCH_SCALE:-full}
REPS=${BENCH_REPS:-1}
BOOT=${BENCH_BOOT:-1}
BOOT_TIMEOUT=${BENCH_BOOT_TIMEOUT:-900}
OS_DIR=${BENCH_OS_DIR:-out/os/debian-12}
OUT=${BENCH_OUT:-out/bench}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
BIN=$OUT/bin
WORK=$OUT/media-work
LOG=$OUT/log/media
TSV=$OUT/media-results.tsv
REPORT=$OUT/media-results.md
CRANE_VERSION=v0.22.1
ISOHDPFX=/usr/lib/ISOLINUX/isohdpfx.bin
ISOLINUX_BIN=/usr/lib/ISOLINUX/isolinux.bin
LDLINUX=/usr/lib/syslinux/modules/bios/ldlinux.c32
OVMF_CODE=/usr/share/OVMF/OVMF_CODE_4M.fd
OVMF_VARS=/usr/share/OVMF/OVMF_VARS_4M.fd
MIB=1048576

case $REPS in '' | *[!0-9]* | 0) echo "BENCH_REPS=$REPS: want a positive number" >&2; exit 2 ;; esac
[ "$REPS" -le 10 ] || { echo "BENCH_REPS=$REPS: at most 10" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "bench-media.sh needs root (the host pipeline unpacks the OS image with its owners)" >&2; exit 1; }

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", b - a}'; }
alloc() { echo $(($(stat -c %b "$1") * $(stat -c %B "$1"))); }
fsize() { stat -c %s "$1"; }
mib() { awk -v b="$1" 'BEGIN {printf "%.1f", b / 1048576}'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", 100 * a / b}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
median() { sort -g | awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
roundmib() { echo $((($1 + MIB - 1) / MIB * MIB)); }

# --- tools -------------------------------------------------------------------

phase "tools"
need_pkgs=()
for t in mksquashfs:squashfs-tools mkfs.vfat:dosfstools mcopy:mtools sfdisk:fdisk xorriso:xorriso \
  qemu-img:qemu-utils jq:jq curl:curl; do
  command -v "${t%%:*}" >/dev/null || need_pkgs+=("${t#*:}")
done
[ -x /usr/bin/time ] || need_pkgs+=(time)
[ -f "$ISOHDPFX" ] || need_pkgs+=(isolinux)
[ -f "$LDLINUX" ] || need_pkgs+=(syslinux-common)
if [ "$BOOT" = 1 ]; then
  command -v qemu-system-x86_64 >/dev/null || need_pkgs+=(qemu-system-x86)
  [ -f "$OVMF_CODE" ] || need_pkgs+=(ovmf)
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi
mkdir -p "$BIN" "$LOG"
rm -rf "$WORK"
mkdir -p "$WORK"
install_crane "$BIN" "$CRANE_VERSION"
go build -o "$BIN/kpaas" ./builder/cmd/kpaas
go build -o "$BIN/benchgen" ./hack/benchgen
KPAAS=$BIN/kpaas

# --- the OS image ----------------------------------------------------------------

phase "OS image ($OS_DIR)"
if ! jq -e '.manifests[] | select(.annotations["dev.kpaas.artifact.kind"] == "os")' "$OS_DIR/index.json" >/dev/null 2>&1; then
  "$KPAAS" os build images/debian-12.yaml -o "$OS_DIR" 2>&1 | tee "$LOG/os-build.log" >&2
fi
OS_DIR=$(cd "$OS_DIR" && pwd)
OS_REF=$(jq -r '[.manifests[] | select(.annotations["dev.kpaas.artifact.kind"] == "os")][0].annotations["org.opencontainers.image.ref.name"]' "$OS_DIR/index.json")
echo "OS image: $OS_REF" >&2

# --- registry, image set, bundle -------------------------------------------------

PORT=${BENCH_PORT:-$(free_port 5355 5454)}
REG=127.0.0.1:$PORT
REG_PID=
BOOT_PID=
cleanup() {
  if [ -n "$BOOT_PID" ]; then kill "$BOOT_PID" 2>/dev/null || true; fi
  if [ -n "$REG_PID" ]; then kill "$REG_PID" 2>/dev/null || true; wait "$REG_PID" 2>/dev/null || true; fi
  if [ "${BENCH_KEEP:-0}" != 1 ]; then rm -rf "${WORK:?}"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

phase "registry on $REG and image set (scale $SCALE)"
"$BIN/crane" registry serve --address "$REG" >"$LOG/registry.log" 2>&1 &
REG_PID=$!
wait_up "$REG_PID" "$REG" "$LOG/registry.log"
"$BIN/benchgen" -registry "$REG" -scale "$SCALE" -out "$OUT/media-set.json" -refs "$OUT/media-refs.txt"
mapfile -t REFS <"$OUT/media-refs.txt"

MANIFEST=$OUT/media-bundle.yaml
{
  echo "# Generated by hack/bench-media.sh: the OS image and the benchmark image set."
  echo "apiVersion: kpaas.dev/v1alpha1"
  echo "kind: Bundle"
  echo "metadata:"
  echo "  name: bench-media"
  echo "  version: \"1\""
  echo "platforms: [linux/amd64]"
  echo "kubernetes:"
  echo "  version: v1.35.4"
  echo "os:"
  echo "  image: $OS_REF"
  echo "images:"
  for r in "${REFS[@]}"; do echo "  - $r"; done
} >"$MANIFEST"

phase "bake the bundle (OS image from --mirror $OS_DIR, images from $REG)"
B=$WORK/bundle
"$KPAAS" bake "$MANIFEST" --mirror "$OS_DIR" --insecure-registry "$REG" -o "$B" -q >"$LOG/bake.log" 2>&1 ||
  { tail -20 "$LOG/bake.log" >&2; exit 1; }
kill "$REG_PID" 2>/dev/null || true
wait "$REG_PID" 2>/dev/null || true
REG_PID=

# The bundle's numbers: every file, and what goes to KPAAS-BUNDLE (all but the
# OS image's layer blobs, as kpaas does).
BUNDLE_BYTES=$(find "$B" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
BUNDLE_FILES=$(find "$B" -type f | wc -l)
OS_MANIFEST=$(jq -r '[.manifests[] | select(.annotations["dev.kpaas.artifact.kind"] == "os")][0].digest' "$B/index.json")
blob() { echo "$B/blobs/${1%%:*}/${1#*:}"; }
mapfile -t OS_LAYERS < <(jq -r '.layers[].digest' "$(blob "$OS_MANIFEST")")
OS_LAYER_BYTES=$(jq -r '[.layers[].size] | add' "$(blob "$OS_MANIFEST")")
CMDLINE=$(jq -r '.annotations["dev.kpaas.os.cmdline"]' "$(blob "$OS_MANIFEST")")
KERNEL_PATH=$(jq -r '.annotations["dev.kpaas.os.kernel"]' "$(blob "$OS_MANIFEST")")
INITRD_PATH=$(jq -r '.annotations["dev.kpaas.os.initrd"]' "$(blob "$OS_MANIFEST")")
KREL=$(jq -r '.annotations["dev.kpaas.os.kernel-release"]' "$(blob "$OS_MANIFEST")")
MEDIA_BUNDLE_BYTES=$((BUNDLE_BYTES - OS_LAYER_BYTES))
echo "bundle: $BUNDLE_FILES files, $BUNDLE_BYTES bytes ($(mib "$BUNDLE_BYTES") MiB); OS layers $OS_LAYER_BYTES bytes" >&2
[ "$BUNDLE_BYTES" -ge $((1024 * MIB)) ] || echo "warning: the bundle is under 1 GiB (BENCH_SCALE=$SCALE)" >&2

# --- the two sides ---------------------------------------------------------------

# kpaas: one command.
run_kpaas() { # DIR
  local d=$1
  mkdir -p "$d"
  "$KPAAS" image build --bundle "$B" --format raw,qcow2,iso -o "$d/node" --json -q >"$d/summary.json"
}

# The host pipeline, step by step; each step's wall time goes to $d/steps.tsv.
STEPS=(verify unpack boot-files root-squashfs bundle-squashfs esp raw-gpt qcow2 iso)
step() { # DIR NAME CMD...
  local d=$1 name=$2 t0
  shift 2
  t0=$(now)
  "$@"
  printf '%s\t%s\n' "$name" "$(secs "$t0" "$(now)")" >>"$d/steps.tsv"
}

h_verify() { (cd "$B" && sha256sum --quiet -c SHA256SUMS); }

# Apply the OS image's layers in order as root, as a runtime would: before a
# layer is extracted, its whiteouts delete what the layers below put there
# (.wh.NAME removes NAME, .wh..wh..opq empties the folder); the whiteout
# files themselves are removed after extraction.
h_unpack() {
  local d=$1 l p dir base i=0
  mkdir -p "$d/rootfs"
  for l in "${OS_LAYERS[@]}"; do
    i=$((i + 1))
    # the first layer has nothing below it: no listing pass
    [ "$i" = 1 ] || while IFS= read -r p; do
      p=${p#./}
      dir=$(dirname "$p") base=$(basename "$p")
      if [ "$base" = .wh..wh..opq ]; then
        find "$d/rootfs/$dir" -mindepth 1 -maxdepth 1 -exec rm -rf {} + 2>/dev/null || true
      else
        rm -rf "${d:?}/rootfs/$dir/${base#.wh.}"
      fi
    done < <(tar -tzf "$(blob "$l")" | grep '\(^\|/\)\.wh\.' || true)
    tar -xzf "$(blob "$l")" -C "$d/rootfs" --numeric-owner --same-permissions --same-owner
    find "$d/rootfs" -name '.wh.*' -exec rm -rf {} + 2>/dev/null || true
  done
}

# The boot files and loader configuration kpaas puts on the ESP and in the
# ISO's EFI image.
h_boot_files() {
  local d=$1 r=$1/rootfs title="K-PaaS $OS_REF"
  mkdir -p "$d/esp/EFI/BOOT" "$d/esp/loader/entries" "$d/esp/kpaas"
  cp "$r/usr/lib/systemd/boot/efi/systemd-bootx64.efi" "$d/esp/EFI/BOOT/BOOTX64.EFI"
  cp -L "$r/$KERNEL_PATH" "$d/esp/kpaas/vmlinuz"
  cp -L "$r/$INITRD_PATH" "$d/esp/kpaas/initrd.img"
  printf 'default kpaas.conf\ntimeout 0\neditor no\n' >"$d/esp/loader/loader.conf"
  printf 'title   %s\nversion %s\nlinux   /kpaas/vmlinuz\ninitrd  /kpaas/initrd.img\noptions %s\n' \
    "$title" "$KREL" "$CMDLINE kpaas.root=KPAAS-ROOT-A" >"$d/esp/loader/entries/kpaas.conf"
  cp -a "$d/esp" "$d/isoesp"
  printf 'default kpaas.conf\ntimeout 3\neditor no\n' >"$d/isoesp/loader/loader.conf"
  printf 'title   %s\nversion %s\nlinux   /kpaas/vmlinuz\ninitrd  /kpaas/initrd.img\noptions %s\n' \
    "$title (live)" "$KREL" "$CMDLINE" >"$d/isoesp/loader/entries/kpaas.conf"
  printf 'title   %s\nversion %s\nlinux   /kpaas/vmlinuz\ninitrd  /kpaas/initrd.img\noptions %s\n' \
    "$title (install to disk)" "$KREL" "$CMDLINE kpaas.install=auto" >"$d/isoesp/loader/entries/kpaas-install.conf"
}

# Root: zstd level 3 (kpaas: klauspost/compress SpeedDefault, "roughly
# zstd level 3"), 128 KiB blocks, no xattrs (the OS layers carry none).
h_root_squashfs() {
  mksquashfs "$1/rootfs" "$1/root.squashfs" -comp zstd -Xcompression-level 3 -b 128K \
    -no-xattrs -noappend -quiet -no-progress >/dev/null
}

# Bundle: uncompressed (as kpaas stores it), from a hard-linked copy without
# the OS layer blobs (what kpaas leaves out of KPAAS-BUNDLE).
h_bundle_squashfs() {
  local d=$1 l
  cp -al "$B" "$d/bundle"
  for l in "${OS_LAYERS[@]}"; do rm -f "$d/bundle/blobs/${l%%:*}/${l#*:}"; done
  mksquashfs "$d/bundle" "$d/bundle.squashfs" -noI -noD -noF -noX -no-fragments -b 128K \
    -no-xattrs -noappend -quiet -no-progress >/dev/null
}

# ESP: FAT32, label EFI, sized as kpaas does (files + 10% + 8 MiB, >= 64 MiB).
h_esp() {
  local d=$1 need size
  need=$(du -sb "$d/esp" | cut -f1)
  size=$(roundmib $((need + need / 10 + 8 * MIB)))
  [ "$size" -ge $((64 * MIB)) ] || size=$((64 * MIB))
  truncate -s "$size" "$d/esp.img"
  mkfs.vfat -F 32 -n EFI "$d/esp.img" >/dev/null
  mcopy -s -i "$d/esp.img" "$d/esp/EFI" "$d/esp/loader" "$d/esp/kpaas" ::/
}

# GPT: the same partitions and sizes as kpaas (ESP, ROOT-A = root + 25%,
# ROOT-B = A and empty, BUNDLE, STATE 16 MiB and empty), 1 MiB aligned.
h_raw() {
  local d=$1 esp root bund state total s
  esp=$(fsize "$d/esp.img")
  root=$(roundmib $(($(fsize "$d/root.squashfs") * 5 / 4)))
  bund=$(roundmib "$(fsize "$d/bundle.squashfs")")
  state=$((16 * MIB))
  total=$((MIB + esp + 2 * root + bund + state + MIB))
  truncate -s "$total" "$d/node.raw"
  s=2048
  {
    echo "label: gpt"
    echo "start=$s, size=$((esp / 512)), type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=EFI"
    s=$((s + esp / 512))
    echo "start=$s, size=$((root / 512)), type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=KPAAS-ROOT-A"
    s=$((s + root / 512))
    echo "start=$s, size=$((root / 512)), type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=KPAAS-ROOT-B"
    s=$((s + root / 512))
    echo "start=$s, size=$((bund / 512)), type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=KPAAS-BUNDLE"
    s=$((s + bund / 512))
    echo "start=$s, size=$((state / 512)), type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=KPAAS-STATE"
  } | sfdisk -q "$d/node.raw" >/dev/null
  dd if="$d/esp.img" of="$d/node.raw" bs=1M seek=1 conv=notrunc,sparse status=none
  dd if="$d/root.squashfs" of="$d/node.raw" bs=1M seek=$(((MIB + esp) / MIB)) conv=notrunc,sparse status=none
  dd if="$d/bundle.squashfs" of="$d/node.raw" bs=1M seek=$(((MIB + esp + 2 * root) / MIB)) conv=notrunc,sparse status=none
}

h_qcow2() { qemu-img convert -f raw -O qcow2 "$1/node.raw" "$1/node.qcow2"; }

# Hybrid ISO: isolinux (BIOS) + efiboot.img (UEFI), isohybrid MBR and GPT.
h_iso() {
  local d=$1 need size
  mkdir -p "$d/iso/isolinux" "$d/iso/boot" "$d/iso/kpaas"
  cp "$ISOLINUX_BIN" "$LDLINUX" "$d/iso/isolinux/"
  {
    echo "default live"
    echo "prompt 0"
    echo "timeout 30"
    echo "label live"
    echo "  kernel /kpaas/vmlinuz"
    echo "  initrd /kpaas/initrd.img"
    echo "  append $CMDLINE"
    echo "label install"
    echo "  kernel /kpaas/vmlinuz"
    echo "  initrd /kpaas/initrd.img"
    echo "  append $CMDLINE kpaas.install=auto"
  } >"$d/iso/isolinux/isolinux.cfg"
  need=$(du -sb "$d/isoesp" | cut -f1)
  size=$(roundmib $((need + need / 10 + 2 * MIB)))
  truncate -s "$size" "$d/iso/boot/efiboot.img"
  mkfs.vfat -n EFIBOOT "$d/iso/boot/efiboot.img" >/dev/null
  mcopy -s -i "$d/iso/boot/efiboot.img" "$d/isoesp/EFI" "$d/isoesp/loader" "$d/isoesp/kpaas" ::/
  cp "$d/esp/kpaas/vmlinuz" "$d/esp/kpaas/initrd.img" "$d/iso/kpaas/"
  ln "$d/root.squashfs" "$d/iso/kpaas/root.squashfs"
  ln "$d/bundle.squashfs" "$d/iso/kpaas/bundle.squashfs"
  xorriso -as mkisofs -quiet -o "$d/node.iso" -V KPAAS -R \
    -b isolinux/isolinux.bin -c isolinux/boot.cat -no-emul-boot -boot-load-size 4 -boot-info-table \
    -eltorito-alt-boot -e boot/efiboot.img -no-emul-boot \
    -isohybrid-mbr "$ISOHDPFX" -isohybrid-gpt-basdat \
    "$d/iso" 2>/dev/null
}

run_host() { # DIR
  local d=$1
  mkdir -p "$d"
  : >"$d/steps.tsv"
  step "$d" verify h_verify
  step "$d" unpack h_unpack "$d"
  step "$d" boot-files h_boot_files "$d"
  step "$d" root-squashfs h_root_squashfs "$d"
  step "$d" bundle-squashfs h_bundle_squashfs "$d"
  step "$d" esp h_esp "$d"
  step "$d" raw-gpt h_raw "$d"
  step "$d" qcow2 h_qcow2 "$d"
  step "$d" iso h_iso "$d"
}

export -f run_kpaas run_host step now secs fsize roundmib blob \
  h_verify h_unpack h_boot_files h_root_squashfs h_bundle_squashfs h_esp h_raw h_qcow2 h_iso
export B KPAAS MIB OS_REF CMDLINE KERNEL_PATH INITRD_PATH KREL ISOHDPFX ISOLINUX_BIN LDLINUX
OS_LAYERS_LIST=$(printf '%s\n' "${OS_LAYERS[@]}")
export OS_LAYERS_LIST

# measure MODE REP: sync, run under GNU time, time a separate sync, append a
# row to the TSV: mode rep wall sync maxrss_kib cpu raw_size raw_alloc qcow2_size iso_size
measure() {
  local mode=$1 rep=$2 d=$WORK/$1-$2 tf=$LOG/$1-$2.time lf=$LOG/$1-$2.log t0 t1 t2
  rm -rf "$d"
  sync
  t0=$(now)
  if ! /usr/bin/time -v -o "$tf" bash -c 'mapfile -t OS_LAYERS <<<"$OS_LAYERS_LIST"; set -euo pipefail; run_'"$mode"' "$1"' _ "$d" >"$lf" 2>&1; then
    echo "$mode (run $rep) failed:" >&2
    tail -20 "$lf" >&2
    exit 1
  fi
  t1=$(now)
  sync
  t2=$(now)
  local rss cpu
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$tf")
  cpu=$(awk -F': ' '/User time|System time/ {s += $2} END {printf "%.2f", s}' "$tf")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$rep" "$(secs "$t0" "$t1")" "$(secs "$t1" "$t2")" \
    "$rss" "$cpu" "$(fsize "$d/node.raw")" "$(alloc "$d/node.raw")" "$(fsize "$d/node.qcow2")" "$(alloc "$d/node.qcow2")" \
    "$(fsize "$d/node.iso")" >>"$TSV"
  printf '%s run %s: %ss wall + %ss sync, max RSS %s MiB\n' "$mode" "$rep" "$(secs "$t0" "$t1")" "$(secs "$t1" "$t2")" \
    "$(awk -v k="$rss" 'BEGIN {printf "%.1f", k / 1024}')" >&2
}

phase "warm the page cache with the bundle"
cat "$B"/blobs/sha256/* >/dev/null

printf 'mode\trep\twall\tsync\tmaxrss_kib\tcpu\traw_size\traw_alloc\tqcow2_size\tqcow2_alloc\tiso_size\n' >"$TSV"
for rep in $(seq "$REPS"); do
  if [ $((rep % 2)) = 1 ]; then order=(kpaas host); else order=(host kpaas); fi
  for mode in "${order[@]}"; do
    phase "$mode, run $rep/$REPS"
    measure "$mode" "$rep"
    # keep the last run of each side for the figures and the boot; free the rest
    if [ "$rep" -lt "$REPS" ]; then rm -rf "${WORK:?}/$mode-$rep"; fi
  done
done
K=$WORK/kpaas-$REPS
H=$WORK/host-$REPS

# --- checks of the host media (the kpaas media are checked by its tests) -----------

phase "check both sides' media"
qemu-img check -q "$H/node.qcow2"
qemu-img check -q "$K/node.qcow2"
qemu-img compare -q "$K/node.raw" "$K/node.qcow2"
xorriso -indev "$H/node.iso" -report_el_torito plain 2>/dev/null | grep -q 'El Torito boot img :   2' ||
  echo "warning: the host ISO lacks its second El Torito entry" >&2

# --- boot once ---------------------------------------------------------------------

# boot_raw FIRMWARE (ovmf or seabios): boots the kpaas raw image through a
# qcow2 overlay, times every console line and sets BOOT_LOADER (the
# firmware's hand-off to the loader), BOOT_INIT, BOOT_AGENT and BOOT_NOTE.
boot_raw() {
  local fw=$1 fwargs=() loader_re
  BOOT_LOADER=- BOOT_INIT=- BOOT_AGENT=-
  case $fw in
    ovmf)
      cp "$OVMF_VARS" "$WORK/boot-vars.fd"
      fwargs=(-drive if=pflash,format=raw,readonly=on,file="$OVMF_CODE" -drive if=pflash,format=raw,file="$WORK/boot-vars.fd")
      loader_re=$'\t.*BdsDxe: starting' ;;
    seabios) loader_re=$'\t.*SYSLINUX 6' ;; # gptmbr.bin → syslinux on the ESP
  esac
  rm -f "$WORK/boot-overlay.qcow2"
  qemu-img create -q -f qcow2 -b "$K/node.raw" -F raw "$WORK/boot-overlay.qcow2"
  BOOTLOG=$LOG/boot-$fw.log
  : >"$BOOTLOG"
  t0=$(now)
  # every console line, prefixed with the seconds since QEMU started
  qemu-system-x86_64 -machine q35 -accel tcg -smp 1 -m 1536 \
    -nographic -no-reboot -net none "${fwargs[@]}" \
    -drive file="$WORK/boot-overlay.qcow2",format=qcow2,if=virtio </dev/null > >(
      while IFS= read -r line; do
        printf '%s\t%s\n' "$(secs "$t0" "$(now)")" "${line//$'\r'/}"
      done >"$BOOTLOG") 2>&1 &
  BOOT_PID=$!
  AGENT_RE=$'\t.*kpaas-agent( [^ ]+)?: '
  deadline=$(($(date +%s) + BOOT_TIMEOUT))
  while kill -0 "$BOOT_PID" 2>/dev/null && [ "$(date +%s)" -lt "$deadline" ]; do
    grep -aqE "$AGENT_RE" "$BOOTLOG" && break
    sleep 1
  done
  sleep 2 # the rest of the agent's lines
  kill "$BOOT_PID" 2>/dev/null || true
  wait "$BOOT_PID" 2>/dev/null || true
  BOOT_PID=
  sleep 1
  first() { { grep -aE -m1 "$1" "$BOOTLOG" || true; } | cut -f1; }
  BOOT_LOADER=$(first "$loader_re")
  BOOT_INIT=$(first $'\t.*kpaas-init')
  BOOT_AGENT=$(first "$AGENT_RE")
  BOOT_LOADER=${BOOT_LOADER:--} BOOT_INIT=${BOOT_INIT:--} BOOT_AGENT=${BOOT_AGENT:--}
  if [ "$BOOT_AGENT" = - ]; then
    BOOT_NOTE="no kpaas-agent line within ${BOOT_TIMEOUT}s (log: $BOOTLOG)"
  else
    BOOT_NOTE=$(grep -aE "$AGENT_RE" "$BOOTLOG" | cut -f2- | sed 's/^.*\(kpaas-agent\)/\1/; s/|/\\|/g' | paste -sd';' | sed 's/;/; /g')
  fi
}

# the same image under UEFI and under legacy BIOS
declare -A BOOTS=([ovmf]="- - - not run (BENCH_BOOT=0)" [seabios]="- - - not run (BENCH_BOOT=0)")
if [ "$BOOT" = 1 ]; then
  phase "boot the kpaas raw image under OVMF and under SeaBIOS (TCG, 1 vCPU, 1536 MiB; timeout ${BOOT_TIMEOUT}s each)"
  waited=0
  while pgrep qemu-system >/dev/null; do
    [ "$waited" = 0 ] && echo "waiting for the other QEMU VMs to finish (pgrep qemu-system)..." >&2
    sleep 5
    waited=$((waited + 5))
    [ "$waited" -lt 1800 ] || break
  done
  for fw in ovmf seabios; do
    if pgrep qemu-system >/dev/null; then
      BOOTS[$fw]="- - - not run: another VM kept running for 30 minutes"
      continue
    fi
    boot_raw "$fw"
    BOOTS[$fw]="$BOOT_LOADER $BOOT_INIT $BOOT_AGENT $BOOT_NOTE"
  done
fi

# --- report --------------------------------------------------------------------------

col() { awk -F'\t' -v m="$1" -v c="$2" '$1 == m {print $c}' "$TSV"; }
med() { col "$1" "$2" | median; }
K_WALL=$(med kpaas 3) K_SYNC=$(med kpaas 4) H_WALL=$(med host 3) H_SYNC=$(med host 4)
K_WS=$(awk -F'\t' '$1 == "kpaas" {print $3 + $4}' "$TSV" | median)
H_WS=$(awk -F'\t' '$1 == "host" {print $3 + $4}' "$TSV" | median)
H_VERIFY=$(awk -F'\t' '$1 == "verify" {print $2}' "$H/steps.tsv")
H_WS_NOVERIFY=$(awk -v a="$H_WS" -v b="$H_VERIFY" 'BEGIN {printf "%.2f", a - b}')
K_RSS=$(col kpaas 5 | sort -n | tail -1) H_RSS=$(col host 5 | sort -n | tail -1)
K_CPU=$(med kpaas 6) H_CPU=$(med host 6)
RATIO=$(ratio "$H_WS" "$K_WS")
RATIO_NOVERIFY=$(ratio "$H_WS_NOVERIFY" "$K_WS")
K_VERIFY=$(jq -r '.steps[] | select(.name == "verify") | .durationNs / 1e9' "$K/summary.json")

K_ROOT=$(jq -r .root.size "$K/summary.json")
K_ROOT_IN=$(jq -r .root.inputBytes "$K/summary.json")
H_ROOT=$(fsize "$H/root.squashfs")
H_BUND=$(fsize "$H/bundle.squashfs")
K_BUND=$(jq -r '.outputs[] | select(.format == "raw") | .partitions[] | select(.name == "KPAAS-BUNDLE") | .used' "$K/summary.json")
ROOT_CONTENT=$(du -sb --apparent-size "$H/rootfs" | cut -f1)
# Payload = the root file system as each side stores it (its own squashfs,
# compression is not overhead) + the bundle files KPAAS-BUNDLE holds.
K_PAYLOAD=$((K_ROOT + MEDIA_BUNDLE_BYTES))
H_PAYLOAD=$((H_ROOT + MEDIA_BUNDLE_BYTES))
rowv() { awk -F'\t' -v m="$1" -v r="$REPS" -v c="$2" '$1 == m && $2 == r {print $c}' "$TSV"; }
ov() { # BYTES PAYLOAD -> "bytes (pct%)"
  local o=$(($1 - $2))
  printf '%s (%s%%)' "$(mib "$o") MiB" "$(pct "$o" "$2")"
}
verdict() { awk -v v="$1" -v g="$2" -v dir="$3" 'BEGIN {ok = (dir == "ge") ? (v >= g) : (v < g); print ok ? "met" : "missed"}'; }

K_RAW_ALLOC=$(rowv kpaas 8) H_RAW_ALLOC=$(rowv host 8)
K_RAW_SIZE=$(rowv kpaas 7) H_RAW_SIZE=$(rowv host 7)
K_QCOW=$(rowv kpaas 9) H_QCOW=$(rowv host 9)
K_ISO=$(rowv kpaas 11) H_ISO=$(rowv host 11)
K_OV_RAW=$(pct $((K_RAW_ALLOC - K_PAYLOAD)) "$K_PAYLOAD")
K_OV_QCOW=$(pct $((K_QCOW - K_PAYLOAD)) "$K_PAYLOAD")
K_OV_ISO=$(pct $((K_ISO - K_PAYLOAD)) "$K_PAYLOAD")

ksteps=$(jq -r '.steps[] | "\(.name)\t\(.durationNs / 1e9)"' "$K/summary.json" | awk -F'\t' '{printf "%s %.2f, ", $1, $2}' | sed 's/, $//')
hsteps=$(awk -F'\t' '{printf "%s %.2f, ", $1, $2}' "$H/steps.tsv" | sed 's/, $//')

{
  echo "# Media benchmark: kpaas image build vs host tools"
  echo
  echo "Run $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores (load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)), $REPS repetition(s), alternating; medians."
  echo "Bundle: $OS_REF + benchgen set (scale $SCALE), platforms linux/amd64: $BUNDLE_FILES files, $BUNDLE_BYTES bytes ($(mib "$BUNDLE_BYTES") MiB); OS layers $OS_LAYER_BYTES bytes,"
  echo "so KPAAS-BUNDLE holds $MEDIA_BUNDLE_BYTES bytes. Root file system: $ROOT_CONTENT bytes unpacked (kpaas counts $K_ROOT_IN)."
  echo
  echo "| side | wall s | +sync s | wall+sync s | CPU s | max RSS MiB |"
  echo "|---|---|---|---|---|---|"
  echo "| kpaas image build | $K_WALL | $K_SYNC | $K_WS | $K_CPU | $(awk -v k="$K_RSS" 'BEGIN {printf "%.1f", k / 1024}') |"
  echo "| host tools | $H_WALL | $H_SYNC | $H_WS | $H_CPU | $(awk -v k="$H_RSS" 'BEGIN {printf "%.1f", k / 1024}') (largest process) |"
  echo
  echo "kpaas steps (s, last run): $ksteps"
  echo
  echo "host steps (s, last run): $hsteps"
  echo
  echo "| media | kpaas size | kpaas on disk | host size | host on disk |"
  echo "|---|---|---|---|---|"
  echo "| root squashfs | $K_ROOT | | $H_ROOT | |"
  echo "| bundle squashfs | $K_BUND (partition used) | | $H_BUND | |"
  echo "| raw | $K_RAW_SIZE | $K_RAW_ALLOC | $H_RAW_SIZE | $H_RAW_ALLOC |"
  echo "| qcow2 | $K_QCOW | $(rowv kpaas 10) | $H_QCOW | $(rowv host 10) |"
  echo "| iso | $K_ISO | | $H_ISO | |"
  echo
  echo "Overhead = media bytes − payload, payload = the side's root squashfs + the bundle files on the media"
  echo "(kpaas $K_PAYLOAD, host $H_PAYLOAD bytes); raw: allocated bytes (its file size counts the holes of ROOT-A's 25% slack, ROOT-B and STATE); qcow2 and ISO: file size."
  echo
  echo "| overhead | kpaas | host tools |"
  echo "|---|---|---|"
  echo "| raw (allocated) | $(ov "$K_RAW_ALLOC" "$K_PAYLOAD") | $(ov "$H_RAW_ALLOC" "$H_PAYLOAD") |"
  echo "| raw (file size) | $(ov "$K_RAW_SIZE" "$K_PAYLOAD") | $(ov "$H_RAW_SIZE" "$H_PAYLOAD") |"
  echo "| qcow2 | $(ov "$K_QCOW" "$K_PAYLOAD") | $(ov "$H_QCOW" "$H_PAYLOAD") |"
  echo "| iso | $(ov "$K_ISO" "$K_PAYLOAD") | $(ov "$H_ISO" "$H_PAYLOAD") |"
  echo "| raw (allocated) over the whole input bundle ($BUNDLE_BYTES) | $(ov "$K_RAW_ALLOC" "$BUNDLE_BYTES") | $(ov "$H_RAW_ALLOC" "$BUNDLE_BYTES") |"
  echo
  echo "| goal | value | verdict |"
  echo "|---|---|---|"
  echo "| host pipeline / kpaas (wall+sync; both verify the bundle) ≥ 1.0 | $RATIO | $(verdict "$RATIO" 1.0 ge) |"
  echo "| the same without the host's sha256sum -c ($H_VERIFY s; kpaas verify $(printf '%.2f' "$K_VERIFY") s) | $RATIO_NOVERIFY | $(verdict "$RATIO_NOVERIFY" 1.0 ge) |"
  echo "| overhead raw (allocated) < 3% | $K_OV_RAW% | $(verdict "$K_OV_RAW" 3 lt) |"
  echo "| overhead qcow2 < 3% | $K_OV_QCOW% | $(verdict "$K_OV_QCOW" 3 lt) |"
  echo "| overhead ISO < 3% | $K_OV_ISO% | $(verdict "$K_OV_ISO" 3 lt) |"
  read -r l i a n <<<"${BOOTS[ovmf]}"
  echo "| agent's first console line, raw under OVMF + TCG | ${a} s (OVMF starts the loader at ${l} s, kpaas-init at ${i} s) | $n |"
  read -r l i a n <<<"${BOOTS[seabios]}"
  echo "| agent's first console line, the same raw under SeaBIOS + TCG | ${a} s (syslinux at ${l} s, kpaas-init at ${i} s) | $n |"
} >"$REPORT"
cat "$REPORT"
