package bundle_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"log"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"kpaas.dev/appliance/internal/bundle"
)

// exampleBundle makes a small signed bundle holding one host file.
func exampleBundle(dir string) (*bundle.Store, ed25519.PublicKey) {
	s, err := bundle.Create(dir)
	if err != nil {
		log.Fatal(err)
	}
	w := s.NewWriter()
	content := []byte("#!/bin/sh\necho hello\n")
	h, size, err := w.WriteBytes(content)
	if err != nil {
		log.Fatal(err)
	}
	if _, _, err := w.WriteBytes(bundle.EmptyJSON); err != nil {
		log.Fatal(err)
	}
	raw, err := bundle.FileManifest(v1.Descriptor{Digest: h, Size: size}, "hello", "1.0", "0755", "/usr/local/bin/hello")
	if err != nil {
		log.Fatal(err)
	}
	mh, msize, err := w.WriteBytes(raw)
	if err != nil {
		log.Fatal(err)
	}
	d := v1.Descriptor{MediaType: types.OCIManifestSchema1, Digest: mh, Size: msize}
	if err := s.SetEntries([]v1.Descriptor{bundle.Annotate(d, bundle.KindFile, "kpaas.local/files/hello:1.0")}); err != nil {
		log.Fatal(err)
	}
	if err := s.WriteSums(); err != nil {
		log.Fatal(err)
	}
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		log.Fatal(err)
	}
	if err := s.Sign(priv); err != nil {
		log.Fatal(err)
	}
	return s, pub
}

func ExampleStore_Verify() {
	dir, _ := os.MkdirTemp("", "bundle")
	defer os.RemoveAll(dir)
	s, pub := exampleBundle(dir)

	r, err := s.Verify(context.Background(), bundle.VerifyOptions{PublicKey: pub})
	fmt.Printf("%d artifact, %d blobs, signature %s, err %v\n", r.Artifacts, r.Blobs, r.Signature, err)

	// A flipped byte in the file's content is found and named.
	p, _ := s.BlobPath(mustDigest([]byte("#!/bin/sh\necho hello\n")))
	os.WriteFile(p, []byte("#!/bin/sh\necho HELLO\n"), 0o644)
	r, err = s.Verify(context.Background(), bundle.VerifyOptions{PublicKey: pub})
	fmt.Println(len(r.Problems), "problem:", r.Problems[0].Uses[0].Ref, r.Problems[0].Uses[0].Role)
	// Output:
	// 1 artifact, 3 blobs, signature verified, err <nil>
	// 1 problem: kpaas.local/files/hello:1.0 layer 1 of manifest sha256:a241ea52f9b07cf357e37c39cbd4469f52d10c242d82f5433a71194417a78e26
}

func ExampleStore_Export() {
	dir, _ := os.MkdirTemp("", "bundle")
	defer os.RemoveAll(dir)
	s, pub := exampleBundle(filepath.Join(dir, "src"))

	// One tar; the same bundle always gives the same bytes.
	var a, b bytes.Buffer
	s.Export(context.Background(), &a)
	s.Export(context.Background(), &b)
	fmt.Println("deterministic:", bytes.Equal(a.Bytes(), b.Bytes()))

	// Or parts of a fixed size, each with its checksum, for removable media.
	parts, err := s.ExportSplit(context.Background(), dir, "hello.tar", 4096)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(parts), "parts:", filepath.Base(parts[0].Path), "…")

	// Import checks every part, extracts, verifies, then moves into place.
	r, err := bundle.Import(context.Background(), filepath.Join(dir, "hello.tar.sha256sums"), filepath.Join(dir, "copy"),
		bundle.WithVerifyOptions(bundle.VerifyOptions{PublicKey: pub}))
	fmt.Println("imported:", err == nil, "signature", r.Signature)
	// Output:
	// deterministic: true
	// 3 parts: hello.tar.000 …
	// imported: true signature verified
}

func mustDigest(b []byte) v1.Hash {
	h, _, err := v1.SHA256(bytes.NewReader(b))
	if err != nil {
		log.Fatal(err)
	}
	return h
}
