#!/usr/bin/env bash
# Installs the Debian packages the toolchain build, the tests and the
# benchmarks need: a C compiler and libseccomp for runc; skopeo, openssl and
# GNU tar as independent peers and checkers; sfdisk, fsck.vfat, mtools,
# unsquashfs, qemu-img and xorriso to check the disk images we write; and
# isolinux/syslinux-common, whose boot files the ISO writer reads, and
# syslinux, whose installer holds the raw disk's BIOS boot core; mmdebstrap and
# friends for `kpaas os build`; QEMU and OVMF for qemu-tests/. Safe to re-run;
# installs only what is missing. Needs root.
set -euo pipefail
pkgs=(gcc libc6-dev libseccomp-dev pkg-config skopeo openssl tar time
      fdisk dosfstools mtools squashfs-tools qemu-utils xorriso isolinux syslinux-common syslinux cpio
      mmdebstrap systemd-boot-efi kmod xz-utils binutils e2fsprogs qemu-system-x86 ovmf)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "install-deps: need root to install: ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
