package disk

import (
	"encoding/binary"
	"fmt"
	"io"
	"time"

	"kpaas.dev/appliance/internal/zero"
)

// The ISO post-pass. go-diskfs (v1.9.4) has no option for the times it
// writes: Finalize stamps time.Now() into the volume descriptors
// (finalize.go:969, creation, modification, expiration and effective date of
// the PVD and of a Joliet SVD) and into the boot catalog it adds
// (finalize.go:657, its directory record and its Rock Ridge TF entry). Every
// other record takes the staged file's mtime, and its TF entry also the atime
// and the ctime, which no one can set: hard-linking or copying a file into
// the staging folder sets it to the current time. So after Finalize,
// fixISOTimes sets every date of the image to the build time.
//
// What is rewritten, in every primary and supplementary volume descriptor:
// the four volume dates and the date of the root directory record; then, for
// each of their trees, every directory record ("." and ".." too) and, when
// the root's "." record carries a SUSP SP entry, every Rock Ridge TF stamp in
// the System Use areas and the continuation areas (CE) they point to.
//
// Nothing else in the image depends on the clock. Path tables, the El Torito
// boot record and catalog and the boot info table carry no dates.
//
// Rock Ridge PX entries carry the staged files' owners and modes: the
// building user's and umask's. The post-pass sets them as xorriso -r does,
// so the image does not depend on who built it: owner and group 0, read
// for everyone, execute for everyone where anyone had it (and on
// folders), no write bits; symlinks keep their mode.

// isoImage is an ISO 9660 image being fixed: an *os.File will do.
type isoImage interface {
	io.ReaderAt
	io.WriterAt
}

const (
	isoSectorSize = 2048     // volume descriptors sit in 2048-byte sectors from 16 on
	maxISODescs   = 64       // descriptors read before giving up on a terminator
	maxISODir     = 64 << 20 // a larger directory extent is taken for garbage
	maxISOCE      = 64 << 10 // likewise a continuation area
	isoDirFlag    = 0x02     // file flags: a directory
	tfLongForm    = 0x80     // TF flags: 17-byte stamps
	suspCheck     = 0xbeef   // SP check bytes
	isoUnsetDate  = "0000000000000000\x00"
	minISORecord  = 34  // 33 fixed bytes and a one-byte identifier
	isoRecordDate = 18  // offset of the date in a directory record
	isoRootRecord = 156 // offset of the root directory record in a volume descriptor
	isoVolDates   = 813 // offset of the four volume dates
)

// isoDateKind is the format of one date field.
type isoDateKind int

const (
	isoShortDate  isoDateKind = iota // 7 bytes, directory records and short TF stamps
	isoLongDate                      // 17 digits-and-offset bytes, volume descriptors and long TF stamps
	isoExpiryDate                    // a 17-byte volume expiration date, written as "not specified"
	numISODateKind
)

var isoDateLen = [numISODateKind]int{7, 17, 17}

// isoDate is one date field of an image.
type isoDate struct {
	off   int64
	kind  isoDateKind
	where string // for messages: "PVD creation", `PVD "/KPAAS/VMLINUZ.;1" record`, …
}

// fixISOTimes sets every date of the ISO 9660 image in f to t, in UTC. The
// whole image is parsed before the first write, so a malformed image is an
// error and is left as it was.
func fixISOTimes(f isoImage, t time.Time) error {
	enc, err := isoDateBytes(t)
	if err != nil {
		return err
	}
	w, err := walkISO(f)
	if err != nil {
		return err
	}
	for _, d := range w.dates {
		if _, err := f.WriteAt(enc[d.kind], d.off); err != nil {
			return fmt.Errorf("writing the %s date: %w", d.where, err)
		}
	}
	for _, px := range w.owners {
		// mode, then (past the link count) uid and gid, both byte orders
		if _, err := f.WriteAt(bothEndian(rationalMode(px.mode)), px.off+4); err != nil {
			return fmt.Errorf("writing the %s mode: %w", px.where, err)
		}
		if _, err := f.WriteAt(make([]byte, 16), px.off+20); err != nil {
			return fmt.Errorf("writing the %s owner: %w", px.where, err)
		}
	}
	return nil
}

// isoPX is a Rock Ridge PX entry of an image.
type isoPX struct {
	off   int64 // of the entry
	mode  uint32
	where string
}

// rationalMode is a PX mode as xorriso -r makes it.
func rationalMode(m uint32) uint32 {
	const typeMask, dir, symlink = 0o170000, 0o040000, 0o120000
	switch m & typeMask {
	case symlink:
		return m
	case dir:
		return dir | 0o555
	}
	perm := uint32(0o444)
	if m&0o111 != 0 {
		perm |= 0o111
	}
	return m&typeMask | perm
}

func bothEndian(v uint32) []byte {
	b := binary.LittleEndian.AppendUint32(nil, v)
	return binary.BigEndian.AppendUint32(b, v)
}

// isoDateBytes encodes t in each date format. The expiration date is "not
// specified" (sixteen '0' digits, offset 0), as genisoimage and xorriso
// write it; the effective date is t, as genisoimage writes it with
// -creation-date (xorriso with SOURCE_DATE_EPOCH leaves it unspecified).
func isoDateBytes(t time.Time) ([numISODateKind][]byte, error) {
	var enc [numISODateKind][]byte
	t = t.UTC()
	if t.Year() < 1900 || t.Year() > 1900+255 {
		return enc, fmt.Errorf("build time %s is outside the ISO 9660 directory dates (1900 to 2155)", t.Format(time.RFC3339))
	}
	enc[isoShortDate] = []byte{byte(t.Year() - 1900), byte(t.Month()), byte(t.Day()), byte(t.Hour()), byte(t.Minute()), byte(t.Second()), 0}
	enc[isoLongDate] = append([]byte(fmt.Sprintf("%04d%02d%02d%02d%02d%02d%02d", t.Year(), t.Month(), t.Day(),
		t.Hour(), t.Minute(), t.Second(), t.Nanosecond()/1e7)), 0)
	enc[isoExpiryDate] = []byte(isoUnsetDate)
	return enc, nil
}

// isoDates finds every date field of the image in r, without writing.
func isoDates(r io.ReaderAt) ([]isoDate, error) {
	w, err := walkISO(r)
	if err != nil {
		return nil, err
	}
	return w.dates, nil
}

// walkISO finds every date field and Rock Ridge PX entry of the image in
// r, without writing.
func walkISO(r io.ReaderAt) (*isoWalker, error) {
	w := &isoWalker{r: r, seenCE: map[int64]bool{}}
	primary := false
	for i := int64(0); ; i++ {
		if i == maxISODescs {
			return nil, fmt.Errorf("no volume descriptor set terminator in sectors 16 to %d", 16+maxISODescs-1)
		}
		sector := 16 + i
		vd := make([]byte, isoSectorSize)
		if err := readFull(r, vd, sector*isoSectorSize); err != nil {
			return nil, fmt.Errorf("reading the volume descriptor in sector %d: %w", sector, err)
		}
		if string(vd[1:6]) != "CD001" {
			return nil, fmt.Errorf("sector %d holds no volume descriptor (standard identifier %q, want \"CD001\")", sector, vd[1:6])
		}
		switch typ := vd[0]; typ {
		case 0, 3: // boot record (El Torito), partition: no dates
		case 1, 2:
			name := "PVD"
			if typ == 2 {
				name = fmt.Sprintf("SVD in sector %d", sector)
			}
			if err := w.volume(vd, sector, name); err != nil {
				return nil, err
			}
			primary = primary || typ == 1
		case 255:
			if !primary {
				return nil, fmt.Errorf("no primary volume descriptor before the terminator in sector %d", sector)
			}
			return w, nil
		default:
			return nil, fmt.Errorf("sector %d: unknown volume descriptor type %d", sector, typ)
		}
	}
}

// isoWalker collects the date fields of an image.
type isoWalker struct {
	r      io.ReaderAt
	dates  []isoDate
	owners []isoPX
	seenCE map[int64]bool

	// of the volume being walked
	bs      int64 // logical block size
	end     int64 // bytes in the volume
	seenDir map[int64]bool
	susp    bool // its root's "." record has an SP entry
	skip    int  // SP: bytes to skip at the start of each System Use area
}

func (w *isoWalker) add(off int64, kind isoDateKind, where string) {
	w.dates = append(w.dates, isoDate{off: off, kind: kind, where: where})
}

// volume takes the dates of a primary or supplementary volume descriptor in
// sector and walks its directory tree.
func (w *isoWalker) volume(vd []byte, sector int64, name string) error {
	blocks, ok := bothEndian32(vd[80:88])
	if !ok {
		return fmt.Errorf("%s: the two byte orders of the volume space size differ", name)
	}
	bs, ok := bothEndian16(vd[128:132])
	if !ok {
		return fmt.Errorf("%s: the two byte orders of the logical block size differ", name)
	}
	if bs != 512 && bs != 1024 && bs != 2048 {
		return fmt.Errorf("%s: logical block size %d, want 512, 1024 or 2048", name, bs)
	}
	w.bs, w.end = int64(bs), int64(blocks)*int64(bs)
	w.seenDir, w.susp, w.skip = map[int64]bool{}, false, 0

	base := sector * isoSectorSize
	for i, what := range []string{"creation", "modification", "expiration", "effective"} {
		kind := isoLongDate
		if what == "expiration" {
			kind = isoExpiryDate
		}
		w.add(base+isoVolDates+int64(17*i), kind, name+" "+what)
	}
	root := vd[isoRootRecord : isoRootRecord+34]
	if root[0] != 34 || root[32] != 1 || root[33] != 0 {
		return fmt.Errorf("%s: malformed root directory record (length %d, identifier length %d)", name, root[0], root[32])
	}
	w.add(base+isoRootRecord+isoRecordDate, isoShortDate, name+" root record")
	loc, size, err := extent(root)
	if err != nil {
		return fmt.Errorf("%s: root directory record: %w", name, err)
	}
	if root[25]&isoDirFlag == 0 {
		return fmt.Errorf("%s: the root directory record is not a directory", name)
	}
	// breadth first, so the root's "." record (and its SP entry) comes first
	type dir struct {
		loc, size int64
		path      string
	}
	queue := []dir{{loc, size, ""}}
	for len(queue) > 0 {
		d := queue[0]
		queue = queue[1:]
		subdirs, err := w.directory(d.loc, d.size, d.path, name)
		if err != nil {
			return err
		}
		for _, s := range subdirs {
			queue = append(queue, dir{s.loc, s.size, d.path + "/" + s.name})
		}
	}
	return nil
}

type isoSubdir struct {
	loc, size int64
	name      string
}

// directory takes the dates of the directory extent at block loc and returns
// its subdirectories not seen before.
func (w *isoWalker) directory(loc, size int64, path, vol string) ([]isoSubdir, error) {
	shown := path
	if shown == "" {
		shown = "/"
	}
	shown = vol + " directory " + shown
	if w.seenDir[loc] {
		return nil, nil
	}
	w.seenDir[loc] = true
	start := loc * w.bs
	if size < minISORecord || size > maxISODir {
		return nil, fmt.Errorf("%s: extent of %d bytes", shown, size)
	}
	if start+size > w.end {
		return nil, fmt.Errorf("%s: extent at block %d (%d bytes) ends past the volume's %d bytes", shown, loc, size, w.end)
	}
	buf := make([]byte, size)
	if err := readFull(w.r, buf, start); err != nil {
		return nil, fmt.Errorf("reading %s: %w", shown, err)
	}
	var subdirs []isoSubdir
	n := 0 // records seen
	for i := int64(0); i < size; {
		l := int64(buf[i])
		if l == 0 { // the rest of this block is unused
			i = (i/w.bs + 1) * w.bs
			continue
		}
		if l < minISORecord || i+l > size {
			return nil, fmt.Errorf("%s, byte %d: directory record of %d bytes (at least %d, within the %d-byte extent)", shown, i, l, minISORecord, size)
		}
		if i/w.bs != (i+l-1)/w.bs {
			return nil, fmt.Errorf("%s, byte %d: directory record of %d bytes crosses a block boundary", shown, i, l)
		}
		rec := buf[i : i+l]
		nameLen := int64(rec[32])
		if 33+nameLen > l {
			return nil, fmt.Errorf("%s, byte %d: identifier of %d bytes overruns the %d-byte record", shown, i, nameLen, l)
		}
		id := rec[33 : 33+nameLen]
		self, parent := nameLen == 1 && id[0] == 0, nameLen == 1 && id[0] == 1
		where := fmt.Sprintf("%s %q", vol, path+"/"+string(id))
		switch {
		case self:
			where = shown + " \".\""
		case parent:
			where = shown + " \"..\""
		}
		if (n == 0) != self || (n == 1) != parent {
			return nil, fmt.Errorf("%s, byte %d: record %d is %s, want \".\" then \"..\" first", shown, i, n, where)
		}
		if rec[1] != 0 {
			return nil, fmt.Errorf("%s: has an extended attribute record, whose dates are not rewritten", where)
		}
		w.add(start+i+isoRecordDate, isoShortDate, where+" record")

		// System Use area, after the identifier and its padding byte
		su := 33 + nameLen
		if nameLen%2 == 0 {
			su++
		}
		if su > l {
			su = l
		}
		if path == "" && self && !w.susp && l-su >= 7 && string(rec[su:su+2]) == "SP" &&
			binary.BigEndian.Uint16(rec[su+4:su+6]) == suspCheck {
			w.susp, w.skip = true, int(rec[su+6])
		} else if w.susp {
			su += int64(w.skip)
		}
		if w.susp && su < l {
			if err := w.systemUse(rec[su:], start+i+su, where, 0); err != nil {
				return nil, err
			}
		}

		if rec[25]&isoDirFlag != 0 && !self && !parent {
			dl, ds, err := extent(rec)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
			if !w.seenDir[dl] {
				subdirs = append(subdirs, isoSubdir{dl, ds, string(id)})
			}
		}
		n++
		i += l
	}
	if n < 2 {
		return nil, fmt.Errorf("%s: %d records, want at least \".\" and \"..\"", shown, n)
	}
	return subdirs, nil
}

// systemUse takes the dates of the Rock Ridge TF entries in a System Use
// area (or continuation area) at off, and follows its CE entry.
func (w *isoWalker) systemUse(area []byte, off int64, where string, hops int) error {
	var ce []byte
	for p := 0; len(area)-p >= 4; {
		sig, l := string(area[p:p+2]), int(area[p+2])
		if l < 4 {
			if zero.Is(area[p:]) { // padding
				break
			}
			return fmt.Errorf("%s: SUSP entry %q at byte %d of its System Use area has length %d", where, sig, p, l)
		}
		if p+l > len(area) {
			return fmt.Errorf("%s: SUSP entry %q at byte %d (%d bytes) overruns its %d-byte System Use area", where, sig, p, l, len(area))
		}
		e := area[p : p+l]
		switch sig {
		case "ST":
			p = len(area)
			continue
		case "CE":
			if l != 28 {
				return fmt.Errorf("%s: CE entry of %d bytes, want 28", where, l)
			}
			ce = e
		case "PX":
			if l != 36 && l != 44 {
				return fmt.Errorf("%s: PX entry of %d bytes, want 36 or 44", where, l)
			}
			mode, ok := bothEndian32(e[4:12])
			if !ok {
				return fmt.Errorf("%s: the two byte orders of its PX mode differ", where)
			}
			w.owners = append(w.owners, isoPX{off: off + int64(p), mode: mode, where: where + " PX"})
		case "TF":
			if l < 5 {
				return fmt.Errorf("%s: TF entry of %d bytes", where, l)
			}
			flags := e[4]
			kind, size := isoShortDate, 7
			if flags&tfLongForm != 0 {
				kind, size = isoLongDate, 17
			}
			stamps := 0
			for bit := 0; bit < 7; bit++ {
				if flags&(1<<bit) != 0 {
					stamps++
				}
			}
			if l != 5+stamps*size {
				return fmt.Errorf("%s: TF entry of %d bytes for %d stamps of %d bytes", where, l, stamps, size)
			}
			for k := range stamps {
				w.add(off+int64(p+5+k*size), kind, where+" TF")
			}
		}
		p += l
	}
	if ce == nil {
		return nil
	}
	// the continuation area, once (go-diskfs may point two records at one)
	if hops == 100 {
		return fmt.Errorf("%s: more than 100 chained continuation areas", where)
	}
	block, ok1 := bothEndian32(ce[4:12])
	offset, ok2 := bothEndian32(ce[12:20])
	length, ok3 := bothEndian32(ce[20:28])
	if !ok1 || !ok2 || !ok3 {
		return fmt.Errorf("%s: the two byte orders of its CE entry differ", where)
	}
	at := int64(block)*w.bs + int64(offset)
	if length == 0 || length > maxISOCE || at+int64(length) > w.end {
		return fmt.Errorf("%s: continuation area of %d bytes at block %d offset %d is outside the volume", where, length, block, offset)
	}
	if w.seenCE[at] {
		return nil
	}
	w.seenCE[at] = true
	buf := make([]byte, length)
	if err := readFull(w.r, buf, at); err != nil {
		return fmt.Errorf("%s: reading its continuation area: %w", where, err)
	}
	return w.systemUse(buf, at, where, hops+1)
}

// extent reads the location and data length of a directory record.
func extent(rec []byte) (loc, size int64, err error) {
	l, ok1 := bothEndian32(rec[2:10])
	s, ok2 := bothEndian32(rec[10:18])
	if !ok1 || !ok2 {
		return 0, 0, fmt.Errorf("the two byte orders of its extent location or length differ")
	}
	return int64(l), int64(s), nil
}

// bothEndian32 reads an ISO 9660 both-byte-order 32-bit number (7.3.3).
func bothEndian32(b []byte) (uint32, bool) {
	v := binary.LittleEndian.Uint32(b[0:4])
	return v, v == binary.BigEndian.Uint32(b[4:8])
}

// bothEndian16 reads an ISO 9660 both-byte-order 16-bit number (7.2.3).
func bothEndian16(b []byte) (uint16, bool) {
	v := binary.LittleEndian.Uint16(b[0:2])
	return v, v == binary.BigEndian.Uint16(b[2:4])
}

func readFull(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}
