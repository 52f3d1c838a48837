package bundle

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// files reads every regular file below root, by slash path.
func files(t testing.TB, root string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !de.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(root, p)
		out[filepath.ToSlash(rel)] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameFiles(t testing.TB, got, want map[string][]byte) {
	t.Helper()
	for p, b := range want {
		if g, ok := got[p]; !ok {
			t.Errorf("%s missing", p)
		} else if !bytes.Equal(g, b) {
			t.Errorf("%s differs", p)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("unexpected %s", p)
		}
	}
}

// leftovers lists what an import left in a folder besides the expected.
func leftovers(t testing.TB, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, de := range des {
		out = append(out, de.Name())
	}
	return out
}

func TestExportImportRoundTrip(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	// An unreferenced blob is not exported.
	if _, err := f.store.WriteBlob(mustHash(t, []byte("old")), 3, strings.NewReader("old")); err != nil {
		t.Fatal(err)
	}
	want := files(t, f.dir)
	delete(want, blobRel(mustHash(t, []byte("old"))))

	var a, b bytes.Buffer
	if err := f.store.Export(ctx, &a); err != nil {
		t.Fatal(err)
	}
	if err := f.store.Export(ctx, &b); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("two exports differ")
	}
	checkTarLayout(t, a.Bytes())

	work := t.TempDir()
	tarPath := filepath.Join(work, "bundle.tar")
	if err := f.store.ExportFile(ctx, tarPath); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(tarPath); !bytes.Equal(got, a.Bytes()) {
		t.Fatal("ExportFile differs from Export")
	}
	dest := filepath.Join(work, "imported")
	r, err := Import(ctx, tarPath, dest, WithVerifyOptions(VerifyOptions{PublicKey: f.pub}))
	if err != nil {
		t.Fatal(err)
	}
	if r.Signature != SignatureVerified {
		t.Errorf("signature %q", r.Signature)
	}
	sameFiles(t, files(t, dest), want)
	if got := leftovers(t, work); strings.Join(got, " ") != "bundle.tar imported" {
		t.Errorf("work folder holds %v", got)
	}

	// Export the imported bundle: the same bytes again.
	s2, err := Open(dest)
	if err != nil {
		t.Fatal(err)
	}
	var c bytes.Buffer
	if err := s2.Export(ctx, &c); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(c.Bytes(), a.Bytes()) {
		t.Error("exporting the imported bundle gives other bytes")
	}

	// GNU tar reads the export, and coreutils checks what it extracted.
	if _, err := exec.LookPath("tar"); err == nil {
		x := filepath.Join(work, "gnutar")
		os.Mkdir(x, 0o755)
		if out, err := exec.Command("tar", "-xf", tarPath, "-C", x).CombinedOutput(); err != nil {
			t.Fatalf("tar -x: %v\n%s", err, out)
		}
		cmd := exec.Command("sha256sum", "-c", "--quiet", SumsFile)
		cmd.Dir = x
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("sha256sum -c after tar -x: %v\n%s", err, out)
		}
	}
}

// checkTarLayout checks the order and headers of an export.
func checkTarLayout(t *testing.T, b []byte) {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(b))
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if !h.ModTime.Equal(time.Unix(0, 0)) || h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" {
			t.Errorf("%s: header %+v", h.Name, h)
		}
		if (h.Typeflag == tar.TypeDir && h.Mode != 0o755) || (h.Typeflag == tar.TypeReg && h.Mode != 0o644) {
			t.Errorf("%s: mode %o", h.Name, h.Mode)
		}
	}
	head := strings.Join(names[:8], " ")
	if head != "oci-layout index.json kpaas-lock.json sbom.spdx.json SHA256SUMS SHA256SUMS.sig blobs/ blobs/sha256/" {
		t.Errorf("tar starts with %s", head)
	}
	blobs := names[8:]
	if len(blobs) != 17 {
		t.Errorf("%d blobs in the tar, want 17", len(blobs))
	}
	for i := 1; i < len(blobs); i++ {
		if blobs[i-1] >= blobs[i] {
			t.Errorf("blobs not sorted: %s before %s", blobs[i-1], blobs[i])
		}
	}
}

func TestExportSplit(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	var whole bytes.Buffer
	if err := f.store.Export(ctx, &whole); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	const partSize = 40 << 10
	var seen []Part
	parts, err := f.store.ExportSplit(ctx, out, "kpaas.tar", partSize, WithPartDone(func(p Part) { seen = append(seen, p) }))
	if err != nil {
		t.Fatal(err)
	}
	wantParts := (whole.Len() + partSize - 1) / partSize
	if len(parts) != wantParts || len(seen) != wantParts || wantParts < 3 {
		t.Fatalf("%d parts (%d reported), want %d", len(parts), len(seen), wantParts)
	}
	var joined []byte
	var sums strings.Builder
	for i, p := range parts {
		b, err := os.ReadFile(p.Path)
		if err != nil {
			t.Fatal(err)
		}
		if filepath.Base(p.Path) != fmt.Sprintf("kpaas.tar.%03d", i) || (i < len(parts)-1 && len(b) != partSize) {
			t.Errorf("part %s has %d bytes", p.Path, len(b))
		}
		fmt.Fprintf(&sums, "%x  %s\n", sha256.Sum256(b), filepath.Base(p.Path))
		joined = append(joined, b...)
	}
	if !bytes.Equal(joined, whole.Bytes()) {
		t.Error("the parts joined differ from the export")
	}
	if got, _ := os.ReadFile(filepath.Join(out, "kpaas.tar.sha256sums")); string(got) != sums.String() {
		t.Errorf("checksum list:\n%s\nwant:\n%s", got, sums.String())
	}
	if _, err := exec.LookPath("sha256sum"); err == nil {
		cmd := exec.Command("sha256sum", "-c", "--strict", "kpaas.tar.sha256sums")
		cmd.Dir = out
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("sha256sum -c: %v\n%s", err, b)
		}
	}

	want := files(t, f.dir)
	for _, src := range []string{"kpaas.tar.000", "kpaas.tar.sha256sums"} {
		dest := filepath.Join(t.TempDir(), "b")
		var checked int
		if _, err := Import(ctx, filepath.Join(out, src), dest, WithPartDone(func(Part) { checked++ })); err != nil {
			t.Fatalf("import from %s: %v", src, err)
		}
		if checked != len(parts) {
			t.Errorf("import from %s checked %d parts, want %d", src, checked, len(parts))
		}
		sameFiles(t, files(t, dest), want)
	}

	// A shorter export over the same name removes the extra parts.
	if _, err := f.store.ExportSplit(ctx, out, "kpaas.tar", 1<<30); err != nil {
		t.Fatal(err)
	}
	if got := leftovers(t, out); strings.Join(got, " ") != "kpaas.tar.000 kpaas.tar.sha256sums" {
		t.Errorf("after a one-part export: %v", got)
	}
}

// TestImportRejects: every damaged or hostile input fails and leaves
// nothing in the destination's folder.
func TestImportRejects(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	var whole bytes.Buffer
	if err := f.store.Export(ctx, &whole); err != nil {
		t.Fatal(err)
	}
	split := func(t *testing.T, dir string) []Part {
		parts, err := f.store.ExportSplit(ctx, dir, "b.tar", 40<<10)
		if err != nil {
			t.Fatal(err)
		}
		return parts
	}
	evil := func(t *testing.T, dir string, hdr *tar.Header, body string) string {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "oci-layout", Size: int64(len(layoutContent)), Mode: 0o644})
		tw.Write([]byte(layoutContent))
		tw.WriteHeader(hdr)
		tw.Write([]byte(body))
		tw.Close()
		p := filepath.Join(dir, "evil.tar")
		os.WriteFile(p, buf.Bytes(), 0o644)
		return p
	}
	cases := []struct {
		name    string
		prepare func(t *testing.T, dir string) string // returns src
		want    string
	}{
		{"corrupted part", func(t *testing.T, dir string) string {
			parts := split(t, dir)
			flipByte(t, parts[1].Path)
			return filepath.Join(dir, "b.tar.000")
		}, "part b.tar.001: content has digest"},
		{"missing part", func(t *testing.T, dir string) string {
			parts := split(t, dir)
			os.Remove(parts[2].Path)
			return filepath.Join(dir, "b.tar.sha256sums")
		}, "missing part(s): b.tar.002"},
		{"missing checksum list", func(t *testing.T, dir string) string {
			split(t, dir)
			os.Remove(filepath.Join(dir, "b.tar.sha256sums"))
			return filepath.Join(dir, "b.tar.000")
		}, "reading the parts' checksums"},
		{"corrupted blob in a tar", func(t *testing.T, dir string) string {
			b := bytes.Clone(whole.Bytes())
			b[len(b)-4096] ^= 0xff // inside the last blob
			p := filepath.Join(dir, "b.tar")
			os.WriteFile(p, b, 0o644)
			return p
		}, "bundle verification found"},
		{"truncated tar", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "b.tar")
			os.WriteFile(p, whole.Bytes()[:whole.Len()/2], 0o644)
			return p
		}, "unexpected EOF"},
		{"../ entry", func(t *testing.T, dir string) string {
			return evil(t, dir, &tar.Header{Typeflag: tar.TypeReg, Name: "blobs/../../escaped", Size: 2, Mode: 0o644}, "hi")
		}, "path leaves the bundle"},
		{"absolute entry", func(t *testing.T, dir string) string {
			return evil(t, dir, &tar.Header{Typeflag: tar.TypeReg, Name: "/etc/evil", Size: 2, Mode: 0o644}, "hi")
		}, "absolute path"},
		{"symlink", func(t *testing.T, dir string) string {
			return evil(t, dir, &tar.Header{Typeflag: tar.TypeSymlink, Name: "index.json", Linkname: "/etc/passwd"}, "")
		}, "links are not allowed"},
		{"device", func(t *testing.T, dir string) string {
			return evil(t, dir, &tar.Header{Typeflag: tar.TypeChar, Name: "index.json", Devmajor: 1, Devminor: 3}, "")
		}, "devices and pipes are not allowed"},
		{"stray file", func(t *testing.T, dir string) string {
			return evil(t, dir, &tar.Header{Typeflag: tar.TypeReg, Name: "run.sh", Size: 2, Mode: 0o755}, "hi")
		}, "not part of a bundle"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src := c.prepare(t, t.TempDir())
			parent := t.TempDir()
			dest := filepath.Join(parent, "bundle")
			_, err := Import(ctx, src, dest)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Import: %v, want an error containing %q", err, c.want)
			}
			if got := leftovers(t, parent); len(got) != 0 {
				t.Errorf("left behind: %v", got)
			}
		})
	}

	t.Run("destination not empty", func(t *testing.T) {
		dir := t.TempDir()
		p := filepath.Join(dir, "b.tar")
		os.WriteFile(p, whole.Bytes(), 0o644)
		dest := filepath.Join(dir, "dest")
		os.MkdirAll(dest, 0o755)
		os.WriteFile(filepath.Join(dest, "keep"), nil, 0o644)
		if _, err := Import(ctx, p, dest); err == nil {
			t.Fatal("imported into a non-empty folder")
		}
		if got := leftovers(t, dest); strings.Join(got, " ") != "keep" {
			t.Errorf("destination now holds %v", got)
		}
		// An empty folder is fine.
		os.Remove(filepath.Join(dest, "keep"))
		if _, err := Import(ctx, p, dest); err != nil {
			t.Fatal(err)
		}
	})
}

func TestExportRefusesCorruptBlob(t *testing.T) {
	f := newFixture(t)
	flipByte(t, f.blobPath(t, f.shared.Digest))
	p := filepath.Join(t.TempDir(), "b.tar")
	if err := f.store.ExportFile(context.Background(), p); err == nil {
		t.Fatal("exported a corrupt bundle")
	}
	if _, err := os.Stat(p); err == nil {
		t.Error("a failed export left its file")
	}
	dir := t.TempDir()
	if _, err := f.store.ExportSplit(context.Background(), dir, "b.tar", 4096); err == nil {
		t.Fatal("exported a corrupt bundle in parts")
	}
	if got := leftovers(t, dir); len(got) != 0 {
		t.Errorf("a failed split export left %v", got)
	}
}

// TestExportSize: ExportSize is the exact size of the tar.
func TestExportSize(t *testing.T) {
	f := newFixture(t)
	var buf bytes.Buffer
	if err := f.store.Export(context.Background(), &buf); err != nil {
		t.Fatal(err)
	}
	got, err := f.store.ExportSize(context.Background())
	if err != nil || got != int64(buf.Len()) {
		t.Errorf("ExportSize = %d, %v; the tar has %d bytes", got, err, buf.Len())
	}
}

// TestExportSplitPartLimit: a part size that would give more than 1000
// parts (names past .999) is refused before anything is written, naming
// the smallest size that fits.
func TestExportSplitPartLimit(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	_, err := f.store.ExportSplit(context.Background(), dir, "b.tar", 10)
	var tm *TooManyPartsError
	if !errors.As(err, &tm) || tm.Parts <= MaxParts || !strings.Contains(err.Error(), "at least") {
		t.Fatalf("err = %v, want a *TooManyPartsError", err)
	}
	if got := leftovers(t, dir); len(got) != 0 {
		t.Errorf("a refused split export left %v", got)
	}
	parts, err := f.store.ExportSplit(context.Background(), dir, "b.tar", tm.MinPartSize)
	if err != nil || len(parts) > MaxParts {
		t.Errorf("split at the suggested %d bytes: %d parts, %v", tm.MinPartSize, len(parts), err)
	}
}

// TestExportMissingFolder: exporting into a folder that does not exist
// names the folder, and creates nothing.
func TestExportMissingFolder(t *testing.T) {
	f := newFixture(t)
	missing := filepath.Join(t.TempDir(), "media", "usb")
	err := f.store.ExportFile(context.Background(), filepath.Join(missing, "b.tar"))
	if err == nil || !strings.Contains(err.Error(), "folder "+missing+" does not exist") {
		t.Errorf("ExportFile: err = %v, want the folder named", err)
	}
	_, err = f.store.ExportSplit(context.Background(), missing, "b.tar", 1<<20)
	if err == nil || !strings.Contains(err.Error(), "folder "+missing+" does not exist") || strings.Contains(err.Error(), "blob") {
		t.Errorf("ExportSplit: err = %v, want the folder named, no blob", err)
	}
	if _, err := os.Stat(missing); err == nil {
		t.Errorf("export created %s", missing)
	}
}
