package bundle

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// SummedFiles are the metadata files SHA256SUMS covers when present (the
// blobs reachable from index.json are covered too). SHA256SUMS.sig is not:
// it signs SHA256SUMS.
var SummedFiles = []string{LayoutFile, IndexFile, LockFile, SBOMFile}

// WriteSums writes SHA256SUMS in the format of coreutils' sha256sum
// ("<hex>  <path>", paths relative to the bundle, sorted), so that
// `sha256sum -c SHA256SUMS` run in the bundle folder checks everything.
//
// It covers the present SummedFiles, which it hashes, and every blob that
// index.json reaches, which it does not: a blob's name is its digest, and
// blobs are verified when they are written and by Verify. It only reads
// the (small) manifests to find the blobs and checks that each blob file
// exists with its size, so re-writing the sums of a large bundle is fast.
// Call it after the lock and the SBOM are written, and before Sign; an
// unchanged file is not rewritten, so an existing signature stays valid.
func (s *Store) WriteSums() error {
	g := s.graph(context.Background())
	var errs []error
	for _, p := range g.problems {
		errs = append(errs, errors.New(p.String()))
	}
	type line struct{ sum, path string }
	var lines []line
	for _, h := range g.order {
		b := g.blobs[h]
		if b.err != nil {
			errs = append(errs, errors.New(Problem{Blob: h.String(), Uses: b.uses, Message: describeBlobError(b.err)}.String()))
			continue
		}
		if !b.checked {
			if err := s.statBlob(h, b.size); err != nil {
				errs = append(errs, errors.New(Problem{Blob: h.String(), Uses: b.uses, Message: err.Error()}.String()))
				continue
			}
		}
		lines = append(lines, line{h.Hex, blobRel(h)})
	}
	for _, name := range SummedFiles {
		b, err := s.ReadFile(name)
		if errors.Is(err, fs.ErrNotExist) && name != LayoutFile && name != IndexFile {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		sum := sha256.Sum256(b)
		lines = append(lines, line{hex.EncodeToString(sum[:]), name})
	}
	if len(errs) > 0 {
		return fmt.Errorf("writing %s: %w", SumsFile, errors.Join(errs...))
	}
	sort.Slice(lines, func(i, j int) bool { return lines[i].path < lines[j].path })
	var buf bytes.Buffer
	for _, l := range lines {
		fmt.Fprintf(&buf, "%s  %s\n", l.sum, l.path)
	}
	if _, err := s.WriteFile(SumsFile, buf.Bytes()); err != nil {
		return fmt.Errorf("writing %s: %w", SumsFile, err)
	}
	return nil
}

// statBlob checks that a blob file exists with the given size.
func (s *Store) statBlob(h v1.Hash, size int64) error {
	p, err := s.BlobPath(h)
	if err != nil {
		return err
	}
	fi, err := os.Stat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return errMissing
	case err != nil:
		return err
	case !fi.Mode().IsRegular():
		return fmt.Errorf("not a regular file")
	case size >= 0 && fi.Size() != size:
		return &DigestError{Blob: h, WantSize: size, GotSize: fi.Size()}
	}
	return nil
}

// VerifySums checks SHA256SUMS against the bundle: every file it lists
// is hashed (blobs included), and it must list exactly the present
// metadata files and the blobs index.json reaches. It returns a
// *VerifyError listing every problem. Verify does all this and more.
func (s *Store) VerifySums(ctx context.Context) error {
	g := s.graph(ctx)
	if err := s.hashBlobs(ctx, g, VerifyOptions{}); err != nil {
		return err
	}
	var ps []Problem
	for _, h := range g.order {
		if b := g.blobs[h]; b.err != nil {
			ps = append(ps, Problem{Path: blobRel(h), Blob: h.String(), Uses: b.uses, Message: describeBlobError(b.err)})
		}
	}
	ps = append(ps, g.problems...)
	ps = append(ps, s.checkSums(g)...)
	if len(ps) > 0 {
		return &VerifyError{Problems: ps}
	}
	return nil
}

// sumLine is one line of SHA256SUMS.
type sumLine struct {
	sum, path string
}

// parseSums reads the sha256sum format ("<hex>  <path>" or, in binary
// mode, "<hex> *<path>").
func parseSums(b []byte) ([]sumLine, []Problem) {
	var out []sumLine
	var ps []Problem
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		text := sc.Text()
		if text == "" {
			continue
		}
		sum, path, ok := strings.Cut(text, " ")
		path, _ = strings.CutPrefix(path, " ")
		if !ok || len(sum) != 64 || path == "" || strings.HasPrefix(path, " ") {
			ps = append(ps, Problem{Path: SumsFile, Message: fmt.Sprintf("line %d: malformed: %q", n, text)})
			continue
		}
		path = strings.TrimPrefix(path, "*")
		if _, err := hex.DecodeString(sum); err != nil {
			ps = append(ps, Problem{Path: SumsFile, Message: fmt.Sprintf("line %d: malformed checksum %q", n, sum)})
			continue
		}
		out = append(out, sumLine{strings.ToLower(sum), path})
	}
	if err := sc.Err(); err != nil {
		ps = append(ps, Problem{Path: SumsFile, Message: err.Error()})
	}
	return out, ps
}

// checkSums compares SHA256SUMS with the metadata files (hashed here) and
// with the set of reachable blobs (whose content hashBlobs checks).
func (s *Store) checkSums(g *graph) []Problem {
	b, err := s.ReadFile(SumsFile)
	if errors.Is(err, fs.ErrNotExist) {
		return []Problem{{Path: SumsFile, Message: "missing"}}
	}
	if err != nil {
		return []Problem{{Path: SumsFile, Message: err.Error()}}
	}
	lines, ps := parseSums(b)
	summed := map[string]bool{}
	for _, n := range SummedFiles {
		summed[n] = true
	}
	listed := map[string]bool{}
	for _, l := range lines {
		if listed[l.path] {
			ps = append(ps, Problem{Path: l.path, Message: "listed twice in " + SumsFile})
			continue
		}
		listed[l.path] = true
		switch hexName, isBlob := strings.CutPrefix(l.path, BlobsDir+"/sha256/"); {
		case summed[l.path]:
			data, err := s.ReadFile(l.path)
			if errors.Is(err, fs.ErrNotExist) {
				ps = append(ps, Problem{Path: l.path, Message: "listed in " + SumsFile + " but missing"})
				continue
			}
			if err != nil {
				ps = append(ps, Problem{Path: l.path, Message: err.Error()})
				continue
			}
			if got := sha256.Sum256(data); hex.EncodeToString(got[:]) != l.sum {
				ps = append(ps, Problem{Path: l.path, Message: fmt.Sprintf("content has digest sha256:%x, %s lists sha256:%s", got, SumsFile, l.sum)})
			}
		case isBlob:
			h := v1.Hash{Algorithm: "sha256", Hex: hexName}
			bn, ok := g.blobs[h]
			if !ok {
				if g.incomplete() {
					// Probably below a manifest that could not be
					// read, which is reported already.
					continue
				}
				ps = append(ps, Problem{Path: l.path, Message: "listed in " + SumsFile + " but not reachable from " + IndexFile})
				continue
			}
			if l.sum != hexName {
				ps = append(ps, Problem{Path: l.path, Blob: h.String(), Uses: bn.uses, Message: fmt.Sprintf("%s lists sha256:%s for it", SumsFile, l.sum)})
			}
		default:
			ps = append(ps, Problem{Path: l.path, Message: "unexpected entry in " + SumsFile})
		}
	}
	for _, n := range SummedFiles {
		if listed[n] {
			continue
		}
		if _, err := os.Stat(s.Path(n)); err == nil {
			ps = append(ps, Problem{Path: n, Message: "not listed in " + SumsFile})
		}
	}
	for _, h := range g.order {
		if !listed[blobRel(h)] {
			ps = append(ps, Problem{Path: blobRel(h), Blob: h.String(), Uses: g.blobs[h].uses, Message: "not listed in " + SumsFile})
		}
	}
	return ps
}
