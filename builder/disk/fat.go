package disk

import (
	"fmt"
	"io"
	"maps"
	"os"
	"path"
	"slices"
	"time"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/filesystem/fat16"
	"github.com/diskfs/go-diskfs/filesystem/fat32"

	"kpaas.dev/appliance/builder/disk/internal/fatfix"
)

// espFiles is the full file set of an ESP: the layout's files, the kernel
// and initrd, then extra (ISO-only) files on top.
func espFiles(l *Layout, extra map[string]Source) map[string]Source {
	files := map[string]Source{}
	maps.Copy(files, l.ESP)
	files[KernelPath] = l.Kernel
	files[InitrdPath] = l.Initrd
	maps.Copy(files, extra)
	return files
}

// filesBytes is the space the files take, rounded to 4 KiB each.
func filesBytes(files map[string]Source) (int64, error) {
	var n int64
	for p, s := range files {
		sz, err := s.size()
		if err != nil {
			return 0, fmt.Errorf("ESP file %s: %w", p, err)
		}
		n += (sz + 4095) &^ 4095
	}
	return n, nil
}

type fatKind int

const (
	fat16Kind fatKind = iota
	fat32Kind
)

// writeFAT makes a FAT file system of size bytes at byte start of f (go-diskfs),
// copies files into it in path order, then fixes timestamps, serial and
// ".." entries (fatfix) so the result is reproducible and fsck-clean.
func writeFAT(f *os.File, start, size int64, kind fatKind, label string, files map[string]Source, t time.Time, serial uint32, progress func(done, total int64)) error {
	if err := writeFATUnfixed(f, start, size, kind, label, files, progress); err != nil {
		return err
	}
	if err := fatfix.Fix(f, start, t, serial); err != nil {
		return fmt.Errorf("finishing FAT file system: %w", err)
	}
	return nil
}

// writeFATUnfixed is writeFAT without the fatfix pass.
func writeFATUnfixed(f *os.File, start, size int64, kind fatKind, label string, files map[string]Source, progress func(done, total int64)) error {
	b := file.New(f, false)
	var fs filesystem.FileSystem
	var err error
	switch kind {
	case fat32Kind:
		fs, err = fat32.Create(b, size, start, 512, label, true)
	default:
		fs, err = fat16.Create(b, size, start, 512, label, true)
	}
	if err != nil {
		return fmt.Errorf("creating FAT file system: %w", err)
	}
	total, err := filesBytes(files)
	if err != nil {
		return err
	}
	var done int64
	made := map[string]bool{"/": true}
	for _, p := range slices.Sorted(maps.Keys(files)) {
		if dir := path.Dir(p); !made[dir] {
			if err := fs.Mkdir(dir); err != nil {
				return fmt.Errorf("ESP: mkdir %s: %w", dir, err)
			}
			for d := dir; d != "/"; d = path.Dir(d) {
				made[d] = true
			}
		}
		n, err := copyIntoFS(fs, p, files[p])
		if err != nil {
			return fmt.Errorf("ESP: writing %s from %s: %w", p, files[p], err)
		}
		done += n
		if progress != nil {
			progress(done, total)
		}
	}
	return nil
}

func copyIntoFS(fs filesystem.FileSystem, p string, s Source) (int64, error) {
	r, _, err := s.open()
	if err != nil {
		return 0, err
	}
	defer r.Close()
	w, err := fs.OpenFile(p, os.O_CREATE|os.O_RDWR)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(w, r)
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	return n, err
}
