package bundle

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// PEM block types of the key files.
const (
	pemPrivateKey = "PRIVATE KEY" // PKCS#8
	pemPublicKey  = "PUBLIC KEY"  // PKIX
)

// Signature errors, for errors.Is.
var (
	ErrNotSigned    = errors.New("bundle is not signed")
	ErrBadSignature = errors.New("signature does not match")
)

// GenerateKey makes a new ed25519 key pair and writes the private key to
// privPath (PKCS#8 PEM, mode 0600) and the public key to pubPath (PKIX
// PEM, mode 0644). It refuses to overwrite either file, and leaves
// nothing behind when it fails.
func GenerateKey(privPath, pubPath string) (ed25519.PublicKey, error) {
	for _, p := range []string{privPath, pubPath} {
		if _, err := os.Lstat(p); err == nil {
			return nil, fmt.Errorf("generating key: %s already exists", p)
		}
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating key: %w", err)
	}
	privDER, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	if err := writeExclusive(privPath, pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: privDER}), 0o600); err != nil {
		return nil, fmt.Errorf("writing private key: %w", err)
	}
	if err := writeExclusive(pubPath, pem.EncodeToMemory(&pem.Block{Type: pemPublicKey, Bytes: pubDER}), 0o644); err != nil {
		os.Remove(privPath)
		return nil, fmt.Errorf("writing public key: %w", err)
	}
	return pub, nil
}

// writeExclusive creates path (failing if it exists) with mode and data.
func writeExclusive(path string, data []byte, mode os.FileMode) (err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(path)
		}
	}()
	// The umask may have narrowed the mode; never widen a private key's.
	if err := f.Chmod(mode); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return f.Close()
}

// LoadPrivateKey reads an ed25519 private key from a PKCS#8 PEM file.
func LoadPrivateKey(path string) (ed25519.PrivateKey, error) {
	der, err := readPEM(path, pemPrivateKey)
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("reading private key %s: %w", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("reading private key %s: %T is not an ed25519 key", path, k)
	}
	return priv, nil
}

// LoadPublicKey reads an ed25519 public key from a PKIX PEM file.
func LoadPublicKey(path string) (ed25519.PublicKey, error) {
	der, err := readPEM(path, pemPublicKey)
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("reading public key %s: %w", path, err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("reading public key %s: %T is not an ed25519 key", path, k)
	}
	return pub, nil
}

func readPEM(path, typ string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("reading key %s: no PEM block", path)
	}
	if blk.Type != typ {
		return nil, fmt.Errorf("reading key %s: PEM block %q, want %q", path, blk.Type, typ)
	}
	return blk.Bytes, nil
}

// Fingerprint names a public key: "sha256:" and the hex sha256 of its
// PKIX DER encoding (what `openssl pkey -pubin -outform DER | sha256sum`
// prints).
func Fingerprint(pub ed25519.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Sign writes SHA256SUMS.sig: the base64 (standard, padded, one line) of
// the ed25519 signature over the exact bytes of SHA256SUMS. SHA256SUMS
// covers the lock, index.json and, through their digests, every blob, so
// one signature covers the bundle. Call WriteSums first.
func (s *Store) Sign(priv ed25519.PrivateKey) error {
	sums, err := s.ReadFile(SumsFile)
	if err != nil {
		return fmt.Errorf("signing bundle: %w", err)
	}
	if len(priv) != ed25519.PrivateKeySize {
		return fmt.Errorf("signing bundle: invalid ed25519 private key")
	}
	sig := base64.StdEncoding.EncodeToString(ed25519.Sign(priv, sums))
	if _, err := s.WriteFile(SignatureFile, []byte(sig+"\n")); err != nil {
		return fmt.Errorf("signing bundle: %w", err)
	}
	return nil
}

// Unsign removes SHA256SUMS.sig, if present, and reports whether it was.
// An unsigned bake calls it: a signature it did not make would otherwise
// outlive the SHA256SUMS it signed (verify would call it invalid, export
// would carry it along).
func (s *Store) Unsign() (removed bool, err error) {
	err = os.Remove(s.Path(SignatureFile))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("removing the old signature: %w", err)
	}
	return true, nil
}

// VerifySignature checks SHA256SUMS.sig over SHA256SUMS with pub. It
// returns an error wrapping ErrNotSigned or ErrBadSignature. It does not
// check that SHA256SUMS matches the files (Verify does both).
func (s *Store) VerifySignature(pub ed25519.PublicKey) error {
	sigText, err := s.ReadFile(SignatureFile)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %s missing", ErrNotSigned, SignatureFile)
	}
	if err != nil {
		return err
	}
	sums, err := s.ReadFile(SumsFile)
	if err != nil {
		return fmt.Errorf("checking signature: %w", err)
	}
	sig, err := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(sigText)))
	if err != nil || len(sig) != ed25519.SignatureSize {
		return fmt.Errorf("%w: %s is not a base64 ed25519 signature", ErrBadSignature, SignatureFile)
	}
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("checking signature: invalid ed25519 public key")
	}
	if !ed25519.Verify(pub, sums, sig) {
		return fmt.Errorf("%w: %s is not signed by key %s", ErrBadSignature, SumsFile, Fingerprint(pub))
	}
	return nil
}

// MarshalPublicKey encodes pub as LoadPublicKey reads it (PKIX PEM).
func MarshalPublicKey(pub ed25519.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPublicKey, Bytes: der}), nil
}
