package disk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/iso9660"

	"kpaas.dev/appliance/internal/testenv"
)

// TestISOReproducible builds the same ISO twice, more than a second apart
// (go-diskfs stamps time.Now()), and wants the same bytes; then every date
// must be the build time, and the image must still read back.
func TestISOReproducible(t *testing.T) {
	if _, err := FindSyslinux(); err != nil {
		testenv.SkipOrFail(t, err.Error())
	}
	ctx := context.Background()
	l := fixture(t)
	dir := t.TempDir()
	var outs []string
	var sum *Summary
	for i := range 2 {
		if i > 0 {
			time.Sleep(1100 * time.Millisecond)
		}
		out := filepath.Join(dir, fmt.Sprintf("kpaas-%d.iso", i))
		s, err := WriteISO(ctx, l, out)
		if err != nil {
			t.Fatal(err)
		}
		outs, sum = append(outs, out), s
	}
	a, b := readBytes(t, outs[0]), readBytes(t, outs[1])
	if !bytes.Equal(a, b) {
		t.Fatalf("two builds of the same input differ: %s", firstDiff(a, b))
	}
	if !sum.Time.Equal(fixedTime) {
		t.Fatalf("build time %s, want the inputs' time %s", sum.Time, fixedTime)
	}

	checkISODates(t, memISO(a), sum.Time, 20)
	checkISOOwners(t, memISO(a), 10)
	checkISOTree(t, outs[0], sum.Time, "/kpaas/vmlinuz", "/kpaas/initrd.img", ISORootPath, ISOBundlePath,
		"/isolinux/isolinux.bin", "/isolinux/ldlinux.c32", "/isolinux/isolinux.cfg", "/isolinux/boot.cat", ISOEFIBootPath)
	xorrisoReads(t, outs[0], sum.Time, true)
}

// TestFixISOTimes runs the post-pass on a go-diskfs ISO with what our ISO
// lacks: a Joliet SVD, a deeper tree, a symlink and a long name. (Not a tree
// deeper than 8: go-diskfs v1.9.4 writes its Rock Ridge relocation with
// directory lengths shorter than their records, which xorriso does not follow
// and fixISOTimes rejects.)
func TestFixISOTimes(t *testing.T) {
	img := smallISO(t)
	when := time.Date(2030, 7, 8, 9, 10, 11, 120_000_000, time.FixedZone("x", 5*3600))
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	err = fixISOTimes(f, when)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	checkISOOwners(t, memISO(readBytes(t, img)), 10)
	dates := checkISODates(t, memISO(readBytes(t, img)), when, 30)
	var svd, deep bool
	for _, d := range dates {
		svd = svd || strings.HasPrefix(d.where, "SVD")
		deep = deep || strings.HasPrefix(d.where, `PVD "/A/B/C/D/E/F/G/DEEP.TXT;1"`)
	}
	if !svd || !deep {
		t.Errorf("the walk missed the Joliet tree (%v) or the deepest file (%v)", svd, deep)
	}
	checkISOTree(t, img, when, "/a/b/c/d/e/f/g/deep.txt", "/a-rather-long-file-name.text", "/hello.txt", "/boot/boot.cat")
	xorrisoReads(t, img, when, false)
}

func TestFixISOTimesMalformed(t *testing.T) {
	img := smallISO(t)
	good := readBytes(t, img)
	dates, err := isoDates(memISO(good))
	if err != nil {
		t.Fatal(err)
	}
	last := int64(0)
	for _, d := range dates {
		last = max(last, d.off+int64(isoDateLen[d.kind]))
	}
	when := fixedTime

	fix := func(b []byte) (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("panic: %v", r)
				t.Errorf("fixISOTimes panicked: %v", r)
			}
		}()
		return fixISOTimes(memISO(b), when)
	}
	mustFail := func(name string, b []byte, want string) {
		t.Helper()
		err := fix(b)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want one with %q", name, err, want)
		}
	}
	mustFail("empty", nil, "reading the volume descriptor in sector 16")
	mustFail("zeros", make([]byte, 64<<10), "no volume descriptor")
	mustFail("garbage", randomBytes(7, 64<<10), "no volume descriptor")

	// cut anywhere before the last date: an error, never a panic
	for cut := int64(0); cut < int64(len(good)); cut += 331 {
		err := fix(bytes.Clone(good[:cut]))
		if cut < last && err == nil {
			t.Errorf("image cut at %d of %d bytes (last date ends at %d): no error", cut, len(good), last)
		}
	}

	// targeted damage
	pvd := 16 * isoSectorSize
	bad := bytes.Clone(good)
	bad[pvd+isoRootRecord] = 60
	mustFail("root record", bad, "malformed root directory record")
	bad = bytes.Clone(good)
	bad[pvd+80] ^= 1
	mustFail("volume size", bad, "byte orders of the volume space size differ")
	bad = bytes.Clone(good)
	bad[pvd+80], bad[pvd+87] = 20, 20 // a 20-block volume: the directories lie past its end
	mustFail("small volume", bad, "past the volume")
	var tf int64 = -1
	for _, d := range dates {
		if strings.HasSuffix(d.where, " TF") {
			tf = d.off - 5 // the entry's first stamp follows its 5-byte header
			break
		}
	}
	if tf < 0 || string(good[tf:tf+2]) != "TF" {
		t.Fatalf("no TF entry found at %d", tf)
	}
	bad = bytes.Clone(good)
	bad[tf+2] = 200
	mustFail("TF length", bad, "overruns")
	bad = bytes.Clone(good)
	bad[tf+2] -= 7
	mustFail("TF stamps", bad, "TF entry of")
	ce := bytes.Index(good, []byte("CE\x1c\x01"))
	if ce < 0 {
		t.Fatal("no CE entry in the image")
	}
	bad = bytes.Clone(good)
	copy(bad[ce+4:ce+12], []byte{0xff, 0xff, 0xff, 0x7f, 0x7f, 0xff, 0xff, 0xff})
	mustFail("CE location", bad, "outside the volume")
	bad = bytes.Clone(good)
	bad[pvd+isoSectorSize*3] = 7 // the terminator after PVD, SVD and boot record
	mustFail("terminator", bad, "unknown volume descriptor type 7")

	// random damage to the metadata: errors or not, never a panic
	r := rand.New(rand.NewPCG(1, 2))
	for range 3000 {
		bad = bytes.Clone(good)
		for range 1 + r.IntN(4) {
			bad[pvd+r.IntN(int(last)-pvd)] = byte(r.Uint32())
		}
		fix(bad)
	}
	if t.Failed() {
		return
	}
	if err := fix(bytes.Clone(good)); err != nil {
		t.Errorf("the undamaged image: %v", err)
	}
	if _, err := isoDateBytes(time.Date(1899, 12, 31, 0, 0, 0, 0, time.UTC)); err == nil {
		t.Error("a date before 1900 was accepted")
	}
}

// smallISO writes a go-diskfs ISO with Rock Ridge, Joliet, El Torito, a
// symlink and a tree 8 levels deep.
func smallISO(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	ws := filepath.Join(dir, "ws")
	files := []string{"/hello.txt", "/a-rather-long-file-name.text", "/a/b/c/d/e/f/g/deep.txt", "/boot/boot.img"}
	for i, p := range files {
		writeFile(t, filepath.Join(ws, filepath.FromSlash(p)), randomBytes(uint64(20+i), 3000*(i+1)))
	}
	if err := os.Symlink("hello.txt", filepath.Join(ws, "link")); err != nil {
		t.Fatal(err)
	}
	setTimes(t, ws, fixedTime)
	img := filepath.Join(dir, "small.iso")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	iso, err := iso9660.Create(file.New(f, false), 0, 0, 2048, ws)
	if err != nil {
		t.Fatal(err)
	}
	err = iso.Finalize(iso9660.FinalizeOptions{
		RockRidge:        true,
		Joliet:           true,
		VolumeIdentifier: "SMALL",
		ElTorito: &iso9660.ElTorito{
			BootCatalog: "/boot/boot.cat",
			Entries:     []*iso9660.ElToritoEntry{{Platform: iso9660.EFI, Emulation: iso9660.NoEmulation, BootFile: "/boot/boot.img"}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// checkISODates wants every date field of the image to be t (the expiration
// date "not specified"), at least minRecords record dates and some TF stamps.
func checkISODates(t *testing.T, img memISO, when time.Time, minRecords int) []isoDate {
	t.Helper()
	dates, err := isoDates(img)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := isoDateBytes(when)
	if err != nil {
		t.Fatal(err)
	}
	var records, stamps, vols int
	for _, d := range dates {
		got := img[d.off : d.off+int64(isoDateLen[d.kind])]
		if !bytes.Equal(got, enc[d.kind]) {
			t.Errorf("%s date at %d: % x, want % x", d.where, d.off, got, enc[d.kind])
		}
		switch {
		case strings.HasSuffix(d.where, " TF"):
			stamps++
		case strings.HasSuffix(d.where, " record"):
			records++
		default:
			vols++
		}
	}
	if records < minRecords || stamps < 3*minRecords/2 || vols < 4 {
		t.Errorf("%d record dates, %d TF stamps, %d volume dates: the walk missed some", records, stamps, vols)
	}
	t.Logf("%d dates: %d in directory records, %d TF stamps, %d in volume descriptors", len(dates), records, stamps, vols)
	return dates
}

// checkISOTree reads the image with go-diskfs: every entry has the date
// when, and the files named are there.
func checkISOTree(t *testing.T, img string, when time.Time, want ...string) {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	iso, err := iso9660.Read(file.New(f, true), fi.Size(), 0, 2048)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	var walk func(dir string)
	walk = func(dir string) {
		entries, err := iso.ReadDir(dir)
		if err != nil {
			t.Fatalf("go-diskfs reading %s: %v", dir, err)
		}
		for _, e := range entries {
			p := path.Join(dir, e.Name())
			info, err := e.Info()
			if err != nil {
				t.Fatal(err)
			}
			if !info.ModTime().Equal(when.Truncate(time.Second)) {
				t.Errorf("go-diskfs: %s has time %s, want %s", p, info.ModTime(), when)
			}
			seen["/"+p] = true
			if e.IsDir() {
				walk(p)
			}
		}
	}
	walk(".") // io/fs paths
	for _, p := range want {
		if !seen[p] {
			t.Errorf("go-diskfs does not list %s", p)
		}
	}
}

// xorrisoReads checks the image with xorriso: its tree, its volume dates
// and, for our ISO, its El Torito entries.
func xorrisoReads(t *testing.T, img string, when time.Time, elTorito bool) {
	t.Helper()
	need(t, "xorriso")
	ls := run(t, "xorriso", "-indev", img, "-find", "/", "-exec", "lsdl")
	if strings.Count(ls, "\n") < 5 {
		t.Errorf("xorriso -find / -exec lsdl lists little:\n%s", ls)
	}
	// owners and modes as xorriso -r makes them
	for _, l := range strings.Split(ls, "\n") {
		f := strings.Fields(l)
		if len(f) < 5 || !strings.HasSuffix(l, "'") || f[0][0] == 'l' {
			continue
		}
		if f[2] != "0" || f[3] != "0" || strings.Contains(f[0], "w") {
			t.Errorf("xorriso lists %s", l)
		}
	}
	enc, _ := isoDateBytes(when)
	pvd := run(t, "xorriso", "-indev", img, "-pvd_info")
	for _, want := range []string{"Creation Time: " + string(enc[isoLongDate][:16]),
		"Modif. Time  : " + string(enc[isoLongDate][:16]), "Expir. Time  : 0000000000000000",
		"Eff. Time    : " + string(enc[isoLongDate][:16])} {
		if !strings.Contains(pvd, want) {
			t.Errorf("xorriso -pvd_info lacks %q:\n%s", want, pvd)
		}
	}
	if elTorito {
		et := run(t, "xorriso", "-indev", img, "-report_el_torito", "plain")
		for _, want := range []string{"El Torito boot img :   1  BIOS", "El Torito boot img :   2  UEFI"} {
			if !strings.Contains(et, want) {
				t.Errorf("El Torito report lacks %q:\n%s", want, et)
			}
		}
	}
}

// memISO is an image in memory for fixISOTimes.
type memISO []byte

func (m memISO) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off > int64(len(m)) {
		return 0, io.EOF
	}
	n := copy(p, m[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m memISO) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m)) {
		return 0, errors.New("write past the end")
	}
	return copy(m[off:], p), nil
}

func readBytes(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func firstDiff(a, b []byte) string {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return fmt.Sprintf("first difference at byte %d (sector %d, byte %d in it): %#02x != %#02x", i, i/isoSectorSize, i%isoSectorSize, a[i], b[i])
		}
	}
	return fmt.Sprintf("sizes %d and %d", len(a), len(b))
}

// checkISOOwners wants at least min Rock Ridge PX entries, each with owner
// and group 0 and a mode as xorriso -r makes it (no write bits).
func checkISOOwners(t *testing.T, r io.ReaderAt, min int) {
	t.Helper()
	w, err := walkISO(r)
	if err != nil {
		t.Fatal(err)
	}
	if len(w.owners) < min {
		t.Fatalf("%d PX entries, want at least %d", len(w.owners), min)
	}
	for _, px := range w.owners {
		e := make([]byte, 36)
		if _, err := r.ReadAt(e, px.off); err != nil {
			t.Fatal(err)
		}
		uid, _ := bothEndian32(e[20:28])
		gid, _ := bothEndian32(e[28:36])
		if uid != 0 || gid != 0 || rationalMode(px.mode) != px.mode || (px.mode&0o170000 != 0o120000 && px.mode&0o222 != 0) {
			t.Errorf("%s: uid %d gid %d mode %o", px.where, uid, gid, px.mode)
		}
	}
}
