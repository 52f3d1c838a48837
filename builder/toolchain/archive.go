package toolchain

import (
	"archive/tar"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// writeTarGz writes dest as a gzip tarball of the named files of dir, as
// ./<name>, in sorted order, with owner 0:0, mode 0755 and mtime 0 and no
// gzip header name or time: the same files always give the same bytes.
func writeTarGz(dest, dir string, names []string) (err error) {
	names = slices.Sorted(slices.Values(names))
	f, err := os.Create(dest)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	zw, err := gzip.NewWriterLevel(f, gzip.BestCompression)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(zw)
	for _, name := range names {
		if err := addFile(tw, filepath.Join(dir, name), "./"+name, 0o755, time.Unix(0, 0)); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return zw.Close()
}

// addFile appends the regular file src to tw as name.
func addFile(tw *tar.Writer, src, name string, mode int64, mtime time.Time) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	hdr := &tar.Header{
		Typeflag: tar.TypeReg, Name: name, Size: st.Size(), Mode: mode,
		ModTime: mtime,
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	_, err = io.Copy(tw, in)
	return err
}
