#!/usr/bin/env bash
# Installs the Debian packages a target needs. Safe to re-run; installs only
# what is missing, and fetches the apt lists when there are none (the
# toolchain's netfilter layer is fetched with apt).
#
#   hack/install-deps.sh demo   what `make demo` needs: a C compiler, static
#                               libc and libseccomp (runc, pause), binutils,
#                               pkg-config; mmdebstrap and the boot loaders'
#                               packages for the OS image and the media
#   hack/install-deps.sh cluster  that and QEMU, OVMF and qemu-img for
#                               `make demo-cluster`
#   hack/install-deps.sh        everything the tests and benchmarks need too:
#                               skopeo, openssl and GNU tar as independent
#                               peers and checkers; sfdisk, fsck.vfat, mtools,
#                               unsquashfs, qemu-img and xorriso to check the
#                               disk images we write; isolinux/syslinux-common,
#                               whose boot files the ISO writer reads, and
#                               syslinux, whose installer holds the raw
#                               disk's BIOS boot core; mmdebstrap and
#                               friends for `kpaas os build`; QEMU and OVMF for
#                               qemu-tests/; PostgreSQL 15 and Redis for
#                               the real Harbor of internal/harbor/harborlocal
#
# Installing needs root. Run as another user, it installs nothing and, when
# something is missing, names the packages and the command, and fails.
set -euo pipefail
demo=(gcc libc6-dev libseccomp-dev pkg-config binutils
      mmdebstrap systemd-boot-efi kmod xz-utils e2fsprogs isolinux syslinux-common syslinux)
cluster=("${demo[@]}" qemu-system-x86 ovmf qemu-utils)
all=("${demo[@]}" skopeo openssl tar time postgresql-15 redis-server
     fdisk dosfstools mtools squashfs-tools qemu-utils xorriso isolinux syslinux-common syslinux cpio
     mmdebstrap systemd-boot-efi kmod xz-utils e2fsprogs qemu-system-x86 ovmf)
case "${1:-all}" in
  demo) pkgs=("${demo[@]}") ;;
  cluster) pkgs=("${cluster[@]}") ;;
  all) pkgs=("${all[@]}") ;;
  *) echo "install-deps: unknown set ${1} (want demo, cluster or all)" >&2; exit 2 ;;
esac
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
lists=yes
ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1 || lists=no
if [ ${#missing[@]} -eq 0 ] && [ $lists = yes ]; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  if [ ${#missing[@]} -gt 0 ]; then
    echo "install-deps: missing Debian packages: ${missing[*]}" >&2
    echo "install-deps: install them as root: sudo apt-get install ${missing[*]}  (or: sudo $0 ${1:-all})" >&2
  fi
  if [ $lists = no ]; then
    echo "install-deps: the apt package lists are empty: run sudo apt-get update" >&2
  fi
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
if [ ${#missing[@]} -gt 0 ]; then
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
