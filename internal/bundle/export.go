package bundle

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"kpaas.dev/appliance/internal/atomicfile"
)

// ExportedFiles are the metadata files an export carries (when present),
// in this order, before the blobs.
var ExportedFiles = []string{LayoutFile, IndexFile, LockFile, SBOMFile, SumsFile, SignatureFile}

// exportTime is the modification time of every tar entry.
var exportTime = time.Unix(0, 0).UTC()

// SumsSuffix ends the name of the checksum list of split parts.
const SumsSuffix = ".sha256sums"

// Part is one written or checked part of a split export.
type Part struct {
	Index  int    // from 0
	Path   string // file path
	Size   int64
	SHA256 string // hex
}

// TransferOption configures ExportSplit and Import.
type TransferOption func(*transferOptions)

type transferOptions struct {
	onPart func(Part)
	verify VerifyOptions
}

// WithPartDone calls fn after each part is written (ExportSplit) or
// checked (Import).
func WithPartDone(fn func(Part)) TransferOption {
	return func(o *transferOptions) { o.onPart = fn }
}

// WithVerifyOptions sets the options of the Verify that Import runs
// before it moves the bundle into place (e.g. a public key).
func WithVerifyOptions(v VerifyOptions) TransferOption {
	return func(o *transferOptions) { o.verify = v }
}

// Export writes the bundle to w as an uncompressed tar (its blobs are
// compressed already): oci-layout, index.json and the other metadata
// files in ExportedFiles order, then the folders blobs/ and
// blobs/sha256/, then every blob index.json reaches, sorted by digest.
// Unreferenced blobs are left out. Entries have mtime 0, uid/gid 0, mode
// 0644 (folders 0755) and no owner names, so the same bundle always gives
// the same bytes. Blobs are read through verifying readers: a corrupt
// blob fails the export (after part of the tar was written).
func (s *Store) Export(ctx context.Context, w io.Writer) error {
	g := s.graph(ctx)
	if err := g.firstError(); err != nil {
		return fmt.Errorf("exporting bundle: %w", err)
	}
	tw := tar.NewWriter(w)
	for _, name := range ExportedFiles {
		b, err := s.ReadFile(name)
		if errors.Is(err, fs.ErrNotExist) && name != LayoutFile && name != IndexFile {
			continue
		}
		if err != nil {
			return fmt.Errorf("exporting bundle: %w", err)
		}
		if err := tw.WriteHeader(fileHeader(name, int64(len(b)))); err != nil {
			return err
		}
		if _, err := tw.Write(b); err != nil {
			return err
		}
	}
	for _, d := range []string{BlobsDir + "/", BlobsDir + "/sha256/"} {
		hdr := &tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: exportTime}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
	}
	hashes := slices.Clone(g.order)
	slices.SortFunc(hashes, func(a, b v1.Hash) int { return strings.Compare(a.Hex, b.Hex) })
	buf := make([]byte, 1<<20)
	for _, h := range hashes {
		size := g.blobs[h].size
		if err := tw.WriteHeader(fileHeader(blobRel(h), size)); err != nil {
			return err
		}
		rc, err := s.OpenBlob(h, size)
		if err != nil {
			return fmt.Errorf("exporting bundle: %w", err)
		}
		_, err = io.CopyBuffer(tw, ctxReader{ctx, rc}, buf)
		rc.Close()
		if err != nil {
			return fmt.Errorf("exporting blob %s: %w", h, err)
		}
	}
	return tw.Close()
}

func fileHeader(name string, size int64) *tar.Header {
	return &tar.Header{Typeflag: tar.TypeReg, Name: name, Size: size, Mode: 0o644, ModTime: exportTime}
}

// ExportFile writes the export tar to path atomically. The folder of path
// must exist: a mistyped mount point is an error, not a new folder.
func (s *Store) ExportFile(ctx context.Context, path string) error {
	if err := checkOutDir(filepath.Dir(path)); err != nil {
		return err
	}
	return atomicfile.Write(path, 0o644, func(f *os.File) error {
		bw := bufio.NewWriterSize(f, 1<<20)
		if err := s.Export(ctx, bw); err != nil {
			return err
		}
		return bw.Flush()
	})
}

// checkOutDir reports a missing output folder by name, before anything
// is read or written.
func checkOutDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("exporting bundle: folder %s does not exist", dir)
		}
		return fmt.Errorf("exporting bundle: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("exporting bundle: %s is not a folder", dir)
	}
	return nil
}

// MaxParts is the most parts a split export writes: their names end in
// three digits, .000 to .999, so `cat base.???` joins them in order.
const MaxParts = 1000

// PartName is the file name of part i of a split export named base.
func PartName(base string, i int) string { return fmt.Sprintf("%s.%03d", base, i) }

// ExportSize is the size in bytes of the tar Export writes, computed from
// the sizes of the metadata files and the reachable blobs (nothing is
// read but the manifests).
func (s *Store) ExportSize(ctx context.Context) (int64, error) {
	g := s.graph(ctx)
	if err := g.firstError(); err != nil {
		return 0, fmt.Errorf("exporting bundle: %w", err)
	}
	entry := func(size int64) int64 {
		n := 512 + (size+511)/512*512
		if size > 1<<33-1 {
			n += 1024 // a PAX header carries sizes above the ustar limit
		}
		return n
	}
	var total int64
	for _, name := range ExportedFiles {
		fi, err := os.Stat(s.Path(name))
		if err != nil {
			continue
		}
		total += entry(fi.Size())
	}
	total += 2 * 512 // blobs/ and blobs/sha256/
	for _, h := range g.order {
		total += entry(g.blobs[h].size)
	}
	return total + 1024, nil // the tar's end: two zero blocks
}

// ExportSplit writes the export tar into dir as parts of partSize bytes
// (the last one shorter): base.000, base.001, …, each written atomically,
// then base.sha256sums with the sha256 of each part in order (sha256sum
// format, so `sha256sum -c base.sha256sums` checks them and
// `cat base.??? > base` joins them). The checksum list is removed first
// and written last: a failed export leaves no list and none of its
// parts. Parts of an earlier, longer export with the same base are
// removed. An export that would need more than MaxParts parts is refused
// before anything is written, naming the smallest part size that fits.
func (s *Store) ExportSplit(ctx context.Context, dir, base string, partSize int64, opts ...TransferOption) ([]Part, error) {
	if partSize <= 0 {
		return nil, fmt.Errorf("exporting bundle: part size %d", partSize)
	}
	if base == "" || strings.ContainsAny(base, `/\`) {
		return nil, fmt.Errorf("exporting bundle: invalid part name %q", base)
	}
	if err := checkOutDir(dir); err != nil {
		return nil, err
	}
	total, err := s.ExportSize(ctx)
	if err != nil {
		return nil, err
	}
	if n := (total + partSize - 1) / partSize; n > MaxParts {
		return nil, &TooManyPartsError{Parts: n, Total: total, MinPartSize: (total + MaxParts - 1) / MaxParts}
	}
	o := transferOptions{}
	for _, opt := range opts {
		opt(&o)
	}
	sumsPath := filepath.Join(dir, base+SumsSuffix)
	if err := os.Remove(sumsPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	sw := &splitWriter{dir: dir, base: base, size: partSize, onPart: o.onPart}
	bw := bufio.NewWriterSize(sw, 1<<20)
	err = s.Export(ctx, bw)
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = sw.finish()
	}
	if err == nil {
		var b strings.Builder
		for _, p := range sw.parts {
			fmt.Fprintf(&b, "%s  %s\n", p.SHA256, filepath.Base(p.Path))
		}
		err = atomicfile.WriteFile(sumsPath, []byte(b.String()), 0o644)
	}
	if err != nil {
		sw.abort()
		return nil, fmt.Errorf("exporting bundle to %s: %w", filepath.Join(dir, base)+".*", err)
	}
	for i := len(sw.parts); ; i++ {
		if err := os.Remove(filepath.Join(dir, PartName(base, i))); err != nil {
			break
		}
	}
	if err := atomicfile.SyncDir(dir); err != nil {
		return nil, err
	}
	return sw.parts, nil
}

// TooManyPartsError refuses a split export that would need more than
// MaxParts parts.
type TooManyPartsError struct {
	Parts, Total, MinPartSize int64
}

func (e *TooManyPartsError) Error() string {
	return fmt.Sprintf("exporting bundle: %d bytes in parts of this size would make %d parts, more than %d (.000 to .999): use parts of at least %d bytes",
		e.Total, e.Parts, MaxParts, e.MinPartSize)
}

// splitWriter cuts a stream into part files, each written to a temp file
// and renamed when full.
type splitWriter struct {
	dir, base string
	size      int64
	onPart    func(Part)

	f     *os.File
	h     hash.Hash
	n     int64
	parts []Part
}

func (w *splitWriter) Write(p []byte) (int, error) {
	total := 0
	for len(p) > 0 {
		if w.f == nil {
			if len(w.parts) >= MaxParts {
				return total, fmt.Errorf("more than %d parts", MaxParts)
			}
			f, err := os.CreateTemp(w.dir, atomicfile.TempPrefix+PartName(w.base, len(w.parts))+"-*")
			if err != nil {
				return total, err
			}
			w.f, w.h, w.n = f, sha256.New(), 0
		}
		chunk := p[:min(int64(len(p)), w.size-w.n)]
		n, err := w.f.Write(chunk)
		w.h.Write(chunk[:n])
		w.n += int64(n)
		total += n
		if err != nil {
			return total, err
		}
		p = p[n:]
		if w.n == w.size {
			if err := w.closePart(); err != nil {
				return total, err
			}
		}
	}
	return total, nil
}

// closePart syncs the current part and renames it into place.
func (w *splitWriter) closePart() error {
	f := w.f
	w.f = nil
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return err
	}
	p := Part{Index: len(w.parts), Path: filepath.Join(w.dir, PartName(w.base, len(w.parts))), Size: w.n, SHA256: hex.EncodeToString(w.h.Sum(nil))}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		os.Remove(f.Name())
		return err
	}
	if err := os.Rename(f.Name(), p.Path); err != nil {
		os.Remove(f.Name())
		return err
	}
	w.parts = append(w.parts, p)
	if w.onPart != nil {
		w.onPart(p)
	}
	return nil
}

func (w *splitWriter) finish() error {
	if w.f != nil && w.n > 0 {
		return w.closePart()
	}
	return nil
}

// abort removes the temp file and the parts written so far.
func (w *splitWriter) abort() {
	if w.f != nil {
		w.f.Close()
		os.Remove(w.f.Name())
		w.f = nil
	}
	for _, p := range w.parts {
		os.Remove(p.Path)
	}
}

// Import reads an exported bundle and creates destDir from it. src is a
// tar written by Export, the first part (.000) of a split export, or its
// .sha256sums list. Parts must all be present; each one's sha256 is
// checked as it is streamed, and extraction stops at the first bad part.
// Only the files a bundle holds are accepted (no absolute paths, no "..",
// no links or devices, no unexpected names). The bundle is extracted into
// a temp folder beside destDir and renamed to destDir only after a full
// Verify passes; on any failure nothing is left. destDir must not exist,
// or be an empty folder. It returns the Verify report.
func Import(ctx context.Context, src, destDir string, opts ...TransferOption) (*Report, error) {
	o := transferOptions{}
	for _, opt := range opts {
		opt(&o)
	}
	parts, err := importParts(src)
	if err != nil {
		return nil, fmt.Errorf("importing %s: %w", src, err)
	}
	if des, err := os.ReadDir(destDir); err == nil && len(des) > 0 {
		return nil, fmt.Errorf("importing %s: %s exists and is not empty", src, destDir)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("importing %s: %w", src, err)
	}
	parent := filepath.Dir(filepath.Clean(destDir))
	tmp, err := os.MkdirTemp(parent, ".import-"+filepath.Base(destDir)+"-*")
	if err != nil {
		return nil, fmt.Errorf("importing %s: %w", src, err)
	}
	done := false
	defer func() {
		if !done {
			os.RemoveAll(tmp)
		}
	}()

	pr := &partsReader{ctx: ctx, parts: parts, onPart: o.onPart}
	defer pr.close()
	if err := extract(tar.NewReader(pr), tmp); err != nil {
		// A bad part explains a broken tar better than the tar error.
		if pr.err != nil {
			err = pr.err
		}
		return nil, fmt.Errorf("importing %s: %w", src, err)
	}
	// Read the padding after the tar's end so every part is checked.
	if _, err := io.Copy(io.Discard, pr); err != nil {
		return nil, fmt.Errorf("importing %s: %w", src, err)
	}
	st, err := Open(tmp)
	if err != nil {
		return nil, fmt.Errorf("importing %s: %w", src, err)
	}
	rep, err := st.Verify(ctx, o.verify)
	if err != nil {
		return rep, fmt.Errorf("importing %s: %w", src, err)
	}
	for _, d := range []string{filepath.Join(tmp, BlobsDir, "sha256"), filepath.Join(tmp, BlobsDir), tmp} {
		if err := atomicfile.SyncDir(d); err != nil {
			return rep, err
		}
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return rep, err
	}
	// An empty destination folder is replaced (os.Remove fails on a
	// folder that something filled meanwhile).
	if err := os.Remove(destDir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return rep, fmt.Errorf("importing %s: %w", src, err)
	}
	if err := os.Rename(tmp, destDir); err != nil {
		return rep, fmt.Errorf("importing %s: %w", src, err)
	}
	done = true
	return rep, atomicfile.SyncDir(parent)
}

// importParts lists the files to read, with their expected sha256 (empty
// for a plain tar).
func importParts(src string) ([]Part, error) {
	sumsPath := ""
	switch {
	case strings.HasSuffix(src, SumsSuffix):
		sumsPath = src
	case strings.HasSuffix(src, ".000"):
		sumsPath = strings.TrimSuffix(src, ".000") + SumsSuffix
	default:
		fi, err := os.Stat(src)
		if err != nil {
			return nil, err
		}
		return []Part{{Path: src, Size: fi.Size()}}, nil
	}
	b, err := os.ReadFile(sumsPath)
	if err != nil {
		return nil, fmt.Errorf("reading the parts' checksums: %w", err)
	}
	lines, ps := parseSums(b)
	if len(ps) > 0 {
		return nil, fmt.Errorf("%s: %s", sumsPath, ps[0].Message)
	}
	if len(lines) == 0 {
		return nil, fmt.Errorf("%s lists no part", sumsPath)
	}
	var parts []Part
	var missing []string
	for i, l := range lines {
		if l.path != filepath.Base(l.path) || l.path == ".." || l.path == "." {
			return nil, fmt.Errorf("%s: invalid part name %q", sumsPath, l.path)
		}
		p := filepath.Join(filepath.Dir(sumsPath), l.path)
		fi, err := os.Stat(p)
		if err != nil {
			missing = append(missing, l.path)
			continue
		}
		parts = append(parts, Part{Index: i, Path: p, Size: fi.Size(), SHA256: l.sum})
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("missing part(s): %s", strings.Join(missing, ", "))
	}
	return parts, nil
}

// partsReader reads parts one after the other, checking each one's
// sha256 when its end is reached, before any byte of the next is read.
type partsReader struct {
	ctx    context.Context
	parts  []Part
	onPart func(Part)

	i   int
	f   *os.File
	h   hash.Hash
	n   int64
	err error
}

func (r *partsReader) Read(p []byte) (int, error) {
	for {
		if r.err != nil {
			return 0, r.err
		}
		if err := r.ctx.Err(); err != nil {
			return 0, err
		}
		if r.f == nil {
			if r.i == len(r.parts) {
				return 0, io.EOF
			}
			f, err := os.Open(r.parts[r.i].Path)
			if err != nil {
				r.err = err
				return 0, err
			}
			r.f, r.h, r.n = f, sha256.New(), 0
		}
		n, err := r.f.Read(p)
		r.h.Write(p[:n])
		r.n += int64(n)
		if err == io.EOF {
			r.f.Close()
			r.f = nil
			part := r.parts[r.i]
			part.Size = r.n
			got := hex.EncodeToString(r.h.Sum(nil))
			if part.SHA256 != "" && got != part.SHA256 {
				r.err = fmt.Errorf("part %s: content has digest sha256:%s, the list says sha256:%s", filepath.Base(part.Path), got, part.SHA256)
				return 0, r.err
			}
			part.SHA256 = got
			r.i++
			if r.onPart != nil {
				r.onPart(part)
			}
			if n > 0 {
				return n, nil
			}
			continue
		}
		if err != nil {
			r.err = err
		}
		return n, err
	}
}

func (r *partsReader) close() {
	if r.f != nil {
		r.f.Close()
	}
}

var blobEntry = regexp.MustCompile(`^blobs/sha256/[0-9a-f]{64}$`)

// extract writes the entries of a bundle tar into dir, refusing anything
// a bundle does not hold.
func extract(tr *tar.Reader, dir string) error {
	buf := make([]byte, 1<<20)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading tar: %w", err)
		}
		name, err := entryName(hdr)
		if err != nil {
			return err
		}
		target := filepath.Join(dir, filepath.FromSlash(name))
		if hdr.Typeflag == tar.TypeDir {
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		if err := extractFile(tr, target, hdr.Size, buf); err != nil {
			return fmt.Errorf("extracting %s: %w", name, err)
		}
	}
}

// entryName checks a tar entry and returns its cleaned name.
func entryName(hdr *tar.Header) (string, error) {
	raw := hdr.Name
	if strings.HasPrefix(raw, "/") || strings.HasPrefix(raw, `\`) || filepath.IsAbs(raw) {
		return "", fmt.Errorf("tar entry %q: absolute path", raw)
	}
	if slices.Contains(strings.FieldsFunc(raw, func(r rune) bool { return r == '/' || r == '\\' }), "..") {
		return "", fmt.Errorf("tar entry %q: path leaves the bundle", raw)
	}
	name := path.Clean(raw)
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeRegA:
		if slices.Contains(ExportedFiles, name) || blobEntry.MatchString(name) {
			return name, nil
		}
	case tar.TypeDir:
		if name == BlobsDir || name == BlobsDir+"/sha256" {
			return name, nil
		}
	case tar.TypeSymlink, tar.TypeLink:
		return "", fmt.Errorf("tar entry %q: links are not allowed", raw)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		return "", fmt.Errorf("tar entry %q: devices and pipes are not allowed", raw)
	default:
		return "", fmt.Errorf("tar entry %q: unsupported type %q", raw, hdr.Typeflag)
	}
	return "", fmt.Errorf("tar entry %q: not part of a bundle", raw)
}

func extractFile(r io.Reader, target string, size int64, buf []byte) (err error) {
	f, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("duplicate entry")
	}
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	n, err := io.CopyBuffer(f, r, buf)
	if err != nil {
		return err
	}
	if n != size {
		return fmt.Errorf("short entry: %d of %d bytes", n, size)
	}
	return f.Sync()
}
