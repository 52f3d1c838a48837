// Package bundle is the on-disk bundle format: an OCI image layout
// (oci-layout, index.json, blobs/sha256/…) plus kpaas metadata beside it
// (lock, checksum list, SBOM, signature). It reads and writes; it never
// fetches anything over the network, so the agent may import it.
//
// Every write is atomic (temp file, fsync, rename) and idempotent: a blob
// already present with the right size is not written again. Every read of
// blob content goes through a reader that verifies size and digest, so a
// flipped byte is reported, never served as good.
package bundle

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"kpaas.dev/appliance/internal/atomicfile"
)

// File names inside a bundle folder.
const (
	LayoutFile    = "oci-layout"
	IndexFile     = "index.json"
	BlobsDir      = "blobs"
	LockFile      = "kpaas-lock.json"
	SBOMFile      = "sbom.spdx.json"
	SumsFile      = "SHA256SUMS"
	SignatureFile = "SHA256SUMS.sig"
)

// Annotations on index.json descriptors.
const (
	// AnnotationRefName holds the artifact's full original reference,
	// e.g. docker.io/library/nginx:1.25.
	AnnotationRefName = "org.opencontainers.image.ref.name"
	// AnnotationKind is one of the Kind values.
	AnnotationKind = "dev.kpaas.artifact.kind"
	// AnnotationSourceDigest is the upstream digest of an index that the
	// bundle stores filtered down to the selected platforms.
	AnnotationSourceDigest = "dev.kpaas.source.digest"
)

// Kind classifies an artifact.
type Kind string

// Artifact kinds.
const (
	KindImage Kind = "image"
	KindChart Kind = "chart"
	KindFile  Kind = "file"
	KindOS    Kind = "os"
)

const layoutContent = `{"imageLayoutVersion":"1.0.0"}`

// Store is a bundle folder.
type Store struct {
	root string
}

// Create makes dir a bundle folder if it is not one yet, and opens it.
func Create(dir string) (*Store, error) {
	if err := os.MkdirAll(filepath.Join(dir, BlobsDir, "sha256"), 0o755); err != nil {
		return nil, fmt.Errorf("creating bundle %s: %w", dir, err)
	}
	s := &Store{root: dir}
	if _, err := os.Stat(s.Path(LayoutFile)); errors.Is(err, fs.ErrNotExist) {
		if _, err := s.WriteFile(LayoutFile, []byte(layoutContent)); err != nil {
			return nil, err
		}
	}
	if _, err := os.Stat(s.Path(IndexFile)); errors.Is(err, fs.ErrNotExist) {
		if err := s.WriteIndex(&v1.IndexManifest{SchemaVersion: 2, MediaType: "application/vnd.oci.image.index.v1+json"}); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Open opens an existing bundle folder.
func Open(dir string) (*Store, error) {
	b, err := os.ReadFile(filepath.Join(dir, LayoutFile))
	if err != nil {
		return nil, fmt.Errorf("opening bundle %s: not an OCI layout: %w", dir, err)
	}
	var l struct {
		Version string `json:"imageLayoutVersion"`
	}
	if err := json.Unmarshal(b, &l); err != nil || l.Version == "" {
		return nil, fmt.Errorf("opening bundle %s: %s: invalid content", dir, LayoutFile)
	}
	return &Store{root: dir}, nil
}

// Root is the bundle folder.
func (s *Store) Root() string { return s.root }

// Path is the path of a file relative to the bundle folder.
func (s *Store) Path(name string) string { return filepath.Join(s.root, filepath.FromSlash(name)) }

// BlobPath is where the blob with digest h lives. It returns an error for a
// digest that is not a well-formed sha256, so no caller can be led outside
// the blobs folder.
func (s *Store) BlobPath(h v1.Hash) (string, error) {
	if err := checkHash(h); err != nil {
		return "", err
	}
	return filepath.Join(s.root, BlobsDir, h.Algorithm, h.Hex), nil
}

func checkHash(h v1.Hash) error {
	if h.Algorithm != "sha256" || len(h.Hex) != 64 {
		return fmt.Errorf("unsupported digest %q", h.String())
	}
	if _, err := hex.DecodeString(h.Hex); err != nil || strings.ToLower(h.Hex) != h.Hex {
		return fmt.Errorf("malformed digest %q", h.String())
	}
	return nil
}

// HasBlob reports whether a blob with digest h and the given size is
// present. It trusts the name and size; Verify checks content.
func (s *Store) HasBlob(h v1.Hash, size int64) bool {
	p, err := s.BlobPath(h)
	if err != nil {
		return false
	}
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && (size < 0 || fi.Size() == size)
}

// WriteBlob stores the content of r under digest h. The content is hashed
// while it is written; a digest or size mismatch leaves nothing behind and
// returns a *DigestError. A blob already present with the right size is
// not read or written again (written is false).
func (s *Store) WriteBlob(h v1.Hash, size int64, r io.Reader) (written bool, err error) {
	p, err := s.BlobPath(h)
	if err != nil {
		return false, err
	}
	if s.HasBlob(h, size) {
		return false, nil
	}
	// Many blobs go into one folder: Sync fsyncs it once, at the end.
	err = atomicfile.Write(p, 0o644, func(f *os.File) error {
		hasher := sha256.New()
		n, err := io.Copy(io.MultiWriter(f, hasher), r)
		if err != nil {
			return err
		}
		got := hex.EncodeToString(hasher.Sum(nil))
		if got != h.Hex || (size >= 0 && n != size) {
			return &DigestError{Blob: h, Got: v1.Hash{Algorithm: "sha256", Hex: got}, WantSize: size, GotSize: n}
		}
		return nil
	}, atomicfile.NoDirSync())
	if err != nil {
		return false, fmt.Errorf("writing blob %s: %w", h, err)
	}
	return true, nil
}

// OpenBlob opens a blob for reading through a verifying reader: the final
// Read returns a *DigestError instead of io.EOF if the bytes on disk do not
// match the digest (or size, when size >= 0).
func (s *Store) OpenBlob(h v1.Hash, size int64) (io.ReadCloser, error) {
	p, err := s.BlobPath(h)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("opening blob %s: %w", h, err)
	}
	return NewVerifyingReader(f, h, size), nil
}

// ReadBlob reads a whole (small) blob and verifies it.
func (s *Store) ReadBlob(h v1.Hash) ([]byte, error) {
	rc, err := s.OpenBlob(h, -1)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return nil, fmt.Errorf("reading blob %s: %w", h, err)
	}
	return b, nil
}

// Index reads index.json.
func (s *Store) Index() (*v1.IndexManifest, error) {
	b, err := os.ReadFile(s.Path(IndexFile))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", IndexFile, err)
	}
	im, err := v1.ParseIndexManifest(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", s.Path(IndexFile), err)
	}
	return im, nil
}

// WriteIndex replaces index.json atomically (nothing is written when the
// content is unchanged).
func (s *Store) WriteIndex(im *v1.IndexManifest) error {
	if im.Manifests == nil {
		// An empty index is "manifests": [], never null (the OCI index
		// schema requires an array).
		cp := *im
		cp.Manifests = []v1.Descriptor{}
		im = &cp
	}
	b, err := json.MarshalIndent(im, "", "  ")
	if err != nil {
		return err
	}
	_, err = s.WriteFile(IndexFile, append(b, '\n'))
	return err
}

// WriteFile atomically writes a metadata file of the bundle (0644). It
// reports whether anything changed: a file with this content and mode is
// left untouched.
func (s *Store) WriteFile(name string, data []byte) (changed bool, err error) {
	return atomicfile.Update(s.Path(name), data, 0o644)
}

// ReadFile reads a metadata file of the bundle.
func (s *Store) ReadFile(name string) ([]byte, error) {
	return os.ReadFile(s.Path(name))
}

// Sync flushes the folders that hold new files to disk, so renames made
// before it survive a power cut.
func (s *Store) Sync() error {
	for _, d := range []string{filepath.Join(s.root, BlobsDir, "sha256"), s.root} {
		if err := atomicfile.SyncDir(d); err != nil {
			return err
		}
	}
	return nil
}
