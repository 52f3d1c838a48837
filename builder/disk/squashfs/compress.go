package squashfs

import (
	"bytes"
	"compress/zlib"
	"fmt"

	"github.com/klauspost/compress/zstd"
)

// Compression names a squashfs compressor. Only compressors that the Linux
// kernel mounts reliably are offered.
type Compression string

const (
	// Zstd compresses data and metadata with zstd (kernel id 6). The default.
	Zstd Compression = "zstd"
	// Gzip compresses with zlib (squashfs calls it gzip, kernel id 1).
	Gzip Compression = "gzip"
	// None stores data blocks as they are (for content that is already
	// compressed, such as OCI blobs); metadata is still zlib-compressed.
	None Compression = "none"
)

const (
	compZlib = 1
	compZstd = 6
)

// compressor compresses one block; it is used by one goroutine at a time.
type compressor interface {
	compress(dst, src []byte) ([]byte, error)
}

func newCompressor(c Compression, level int) (compressor, uint16, error) {
	switch c {
	case Zstd:
		l := zstd.SpeedDefault
		if level > 0 {
			l = zstd.EncoderLevelFromZstd(level)
		}
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(l), zstd.WithEncoderConcurrency(1),
			zstd.WithEncoderCRC(false), zstd.WithZeroFrames(true))
		if err != nil {
			return nil, 0, err
		}
		return zstdComp{enc}, compZstd, nil
	case Gzip, None:
		if level == 0 {
			level = zlib.DefaultCompression
		}
		if level < zlib.HuffmanOnly || level > zlib.BestCompression {
			return nil, 0, fmt.Errorf("gzip level %d out of range", level)
		}
		return &zlibComp{level: level}, compZlib, nil
	default:
		return nil, 0, fmt.Errorf("unsupported squashfs compression %q (want zstd, gzip or none)", c)
	}
}

type zstdComp struct{ enc *zstd.Encoder }

func (z zstdComp) compress(dst, src []byte) ([]byte, error) {
	return z.enc.EncodeAll(src, dst[:0]), nil
}

type zlibComp struct {
	level int
	buf   bytes.Buffer
	w     *zlib.Writer
}

func (z *zlibComp) compress(dst, src []byte) ([]byte, error) {
	z.buf.Reset()
	if z.w == nil {
		w, err := zlib.NewWriterLevel(&z.buf, z.level)
		if err != nil {
			return nil, err
		}
		z.w = w
	} else {
		z.w.Reset(&z.buf)
	}
	if _, err := z.w.Write(src); err != nil {
		return nil, err
	}
	if err := z.w.Close(); err != nil {
		return nil, err
	}
	return append(dst[:0], z.buf.Bytes()...), nil
}
