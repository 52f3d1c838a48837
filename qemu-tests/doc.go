// Package qemutests holds the QEMU boot tests. They are ordinary Go tests
// behind the build tag qemu, so `go test ./...` never starts a VM:
//
//	go test -tags qemu -v -timeout 40m ./qemu-tests/
//
// TestBootDisk and TestBootRescue boot the OS image's kernel directly;
// the TestMedia tests boot what `kpaas image build` writes (raw and qcow2
// under OVMF, the ISO under SeaBIOS and OVMF, as a CD-ROM and as a USB
// stick). They need root (the OS image is built with mmdebstrap, unless
// KPAAS_OS_DIR names one), qemu-system-x86, ovmf, squashfs-tools and
// fdisk, and run under software emulation (no KVM). The VMs are started by
// package vm; KPAAS_KEEP_VMS=1 keeps a failed test's VM and files.
// README.md has the details and expected durations.
package qemutests
