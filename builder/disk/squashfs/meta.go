package squashfs

import "encoding/binary"

const metaSize = 8192

// metaWriter collects a metadata table (inodes, directories, ids) in
// memory as a sequence of 8 KiB blocks, each compressed when that helps and
// prefixed by its 2-byte length header. Metadata is small next to file
// data: about 40 bytes per entry.
type metaWriter struct {
	c    compressor
	out  []byte // finished blocks
	cur  []byte // block being filled
	tmp  []byte
	errs error
}

// pos is where the next byte goes: the offset of the current block in the
// table and the offset inside its uncompressed content.
func (m *metaWriter) pos() (block uint32, offset uint16) {
	return uint32(len(m.out)), uint16(len(m.cur))
}

func (m *metaWriter) write(b []byte) {
	for len(b) > 0 {
		n := min(metaSize-len(m.cur), len(b))
		m.cur = append(m.cur, b[:n]...)
		b = b[n:]
		if len(m.cur) == metaSize {
			m.flush()
		}
	}
}

func (m *metaWriter) flush() {
	if len(m.cur) == 0 || m.errs != nil {
		return
	}
	data, hdr := m.cur, uint16(len(m.cur))|0x8000
	if z, err := m.c.compress(m.tmp, m.cur); err != nil {
		m.errs = err
		return
	} else if len(z) < len(m.cur) {
		data, hdr, m.tmp = z, uint16(len(z)), z
	}
	m.out = binary.LittleEndian.AppendUint16(m.out, hdr)
	m.out = append(m.out, data...)
	m.cur = m.cur[:0]
}

// finish flushes the last, partial block and returns the table.
func (m *metaWriter) finish() ([]byte, error) {
	m.flush()
	return m.out, m.errs
}
