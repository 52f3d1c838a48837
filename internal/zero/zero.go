// Package zero finds all-zero buffers: blocks and clusters the disk
// writers leave as holes instead of writing, padding in ISO records, zero
// extents of an install plan read back.
package zero

import "encoding/binary"

// Is reports whether every byte of b is zero.
func Is(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
