package bundle

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"kpaas.dev/appliance/internal/testenv"
)

func TestGenerateKey(t *testing.T) {
	dir := t.TempDir()
	priv, pub := filepath.Join(dir, "kpaas.key"), filepath.Join(dir, "kpaas.pub")
	got, err := GenerateKey(priv, pub)
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]struct {
		mode os.FileMode
		typ  string
	}{priv: {0o600, "PRIVATE KEY"}, pub: {0o644, "PUBLIC KEY"}} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want.mode {
			t.Errorf("%s: mode %v, want %v", path, fi.Mode().Perm(), want.mode)
		}
		b, _ := os.ReadFile(path)
		if blk, _ := pem.Decode(b); blk == nil || blk.Type != want.typ {
			t.Errorf("%s: not a %q PEM block", path, want.typ)
		}
	}
	k, err := LoadPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	p, err := LoadPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Equal(got) || !k.Public().(ed25519.PublicKey).Equal(got) {
		t.Error("loaded keys differ from the generated ones")
	}
	if _, err := LoadPublicKey(priv); err == nil {
		t.Error("LoadPublicKey accepted a private key file")
	}

	// Never overwrite, and leave the existing files alone.
	before, _ := os.ReadFile(priv)
	if _, err := GenerateKey(priv, filepath.Join(dir, "other.pub")); err == nil {
		t.Error("GenerateKey overwrote a private key")
	}
	if _, err := GenerateKey(filepath.Join(dir, "other.key"), pub); err == nil {
		t.Error("GenerateKey overwrote a public key")
	}
	after, _ := os.ReadFile(priv)
	if string(before) != string(after) {
		t.Error("private key changed")
	}
	for _, n := range []string{"other.key", "other.pub"} {
		if _, err := os.Stat(filepath.Join(dir, n)); err == nil {
			t.Errorf("%s left behind by a failed GenerateKey", n)
		}
	}
}

func TestSignature(t *testing.T) {
	cases := []struct {
		name   string
		change func(t *testing.T, f *fixture)
		key    func(f *fixture) ed25519.PublicKey
		ok     bool
	}{
		{name: "unchanged", change: func(*testing.T, *fixture) {}, ok: true},
		{name: "SHA256SUMS edited", change: func(t *testing.T, f *fixture) {
			replaceIn(t, f.store.Path(SumsFile), "  oci-layout", "  oci-layout\n")
		}},
		{name: "lock changed and sums rewritten", change: func(t *testing.T, f *fixture) {
			replaceIn(t, f.store.Path(LockFile), `"version": "0.0.1"`, `"version": "0.0.2"`)
			if err := f.store.WriteSums(); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "index changed and sums rewritten", change: func(t *testing.T, f *fixture) {
			entries, err := f.store.Entries()
			if err != nil {
				t.Fatal(err)
			}
			var ds []v1.Descriptor
			for _, e := range entries[1:] {
				ds = append(ds, e.Descriptor)
			}
			if err := f.store.SetEntries(ds); err != nil {
				t.Fatal(err)
			}
			if err := f.store.WriteSums(); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "signature edited", change: func(t *testing.T, f *fixture) {
			b, _ := os.ReadFile(f.store.Path(SignatureFile))
			sig, _ := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
			sig[0] ^= 1
			os.WriteFile(f.store.Path(SignatureFile), []byte(base64.StdEncoding.EncodeToString(sig)), 0o644)
		}},
		{name: "wrong key", change: func(*testing.T, *fixture) {}, key: func(*fixture) ed25519.PublicKey {
			pub, _, _ := ed25519.GenerateKey(nil)
			return pub
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			c.change(t, f)
			key := f.pub
			if c.key != nil {
				key = c.key(f)
			}
			err := f.store.VerifySignature(key)
			if c.ok != (err == nil) {
				t.Fatalf("VerifySignature: %v, want ok=%v", err, c.ok)
			}
			if err != nil && !errors.Is(err, ErrBadSignature) {
				t.Errorf("err = %v, want ErrBadSignature", err)
			}
			_, err = f.store.Verify(context.Background(), VerifyOptions{PublicKey: key})
			if c.ok != (err == nil) {
				t.Errorf("Verify: %v, want ok=%v", err, c.ok)
			}
		})
	}
}

// TestSignatureOpenSSL checks the signature with an independent tool:
// openssl verifies SHA256SUMS.sig (decoded) with the PEM public key.
func TestSignatureOpenSSL(t *testing.T) {
	testenv.RequireTool(t, "openssl")
	f := newFixture(t)
	dir := t.TempDir()
	privPath, pubPath := filepath.Join(dir, "k.key"), filepath.Join(dir, "k.pub")
	if _, err := GenerateKey(privPath, pubPath); err != nil {
		t.Fatal(err)
	}
	priv, err := LoadPrivateKey(privPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.store.Sign(priv); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(f.store.Path(SignatureFile))
	sig, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	sigPath := filepath.Join(dir, "sig.bin")
	os.WriteFile(sigPath, sig, 0o644)
	out, err := exec.Command("openssl", "pkeyutl", "-verify", "-pubin", "-inkey", pubPath, "-rawin",
		"-in", f.store.Path(SumsFile), "-sigfile", sigPath).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl rejects the signature: %v\n%s", err, out)
	}
	// And openssl reads the private key file too (PKCS#8).
	if out, err := exec.Command("openssl", "pkey", "-in", privPath, "-noout").CombinedOutput(); err != nil {
		t.Errorf("openssl cannot read the private key: %v\n%s", err, out)
	}
}
