// Package qemutests holds the QEMU boot tests. They are ordinary Go tests
// behind the build tag qemu, so `go test ./...` never starts a VM:
//
//	go test -tags qemu -v -timeout 30m ./qemu-tests/
//
// They need root (the OS image is built with mmdebstrap), qemu-system-x86,
// squashfs-tools and fdisk, and run under software emulation (no KVM).
package qemutests
