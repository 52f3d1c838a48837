package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"kpaas.dev/appliance/internal/bundle"
)

// kpaas runs the command line and returns its output.
func kpaas(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var o, e bytes.Buffer
	err = Run(context.Background(), args, strings.NewReader(""), &o, &e)
	return o.String(), e.String(), err
}

// testBundle writes a small bundle of two host files sharing nothing
// but the empty config, signed with a key made by `kpaas key generate`.
func testBundle(t *testing.T) (dir, keyPrefix string) {
	t.Helper()
	work := t.TempDir()
	keyPrefix = filepath.Join(work, "site")
	if out, _, err := kpaas(t, "key", "generate", "-o", keyPrefix); err != nil || !strings.Contains(out, "fingerprint sha256:") {
		t.Fatalf("key generate: %v\n%s", err, out)
	}
	dir = filepath.Join(work, "bundle")
	s, err := bundle.Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	w := s.NewWriter()
	if _, _, err := w.WriteBytes(bundle.EmptyJSON); err != nil {
		t.Fatal(err)
	}
	var ds []v1.Descriptor
	for _, name := range []string{"kubeadm", "kubelet"} {
		h, size, err := w.WriteBytes(bytes.Repeat([]byte(name+"\n"), 3000))
		if err != nil {
			t.Fatal(err)
		}
		raw, err := bundle.FileManifest(v1.Descriptor{Digest: h, Size: size}, name, "v1.30.2", "0755", "/usr/bin/"+name)
		if err != nil {
			t.Fatal(err)
		}
		mh, msize, err := w.WriteBytes(raw)
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, bundle.Annotate(v1.Descriptor{MediaType: types.OCIManifestSchema1, Digest: mh, Size: msize}, bundle.KindFile, "kpaas.local/files/"+name+":v1.30.2"))
	}
	if err := s.SetEntries(ds); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteSums(); err != nil {
		t.Fatal(err)
	}
	priv, err := bundle.LoadPrivateKey(keyPrefix + ".key")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Sign(priv); err != nil {
		t.Fatal(err)
	}
	return dir, keyPrefix
}

func TestKeyGenerate(t *testing.T) {
	prefix := filepath.Join(t.TempDir(), "k")
	out, _, err := kpaas(t, "key", "generate", "-o", prefix)
	if err != nil {
		t.Fatal(err)
	}
	priv, _ := os.ReadFile(prefix + ".key")
	if strings.Contains(out, string(priv)) || strings.Contains(out, "PRIVATE KEY") {
		t.Error("the private key was printed")
	}
	fi, err := os.Stat(prefix + ".key")
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("private key: %v %v", fi.Mode(), err)
	}
	if _, _, err := kpaas(t, "key", "generate", "-o", prefix); err == nil {
		t.Error("key generate overwrote existing keys")
	}
}

func TestBundleVerifyCmd(t *testing.T) {
	dir, key := testBundle(t)
	out, _, err := kpaas(t, "bundle", "verify", dir, "--key", key+".pub")
	if err != nil {
		t.Fatalf("verify: %v\n%s", err, out)
	}
	if !strings.Contains(out, ": ok: 2 artifacts, 5 blobs") || !strings.Contains(out, "signature: verified (key sha256:") {
		t.Errorf("output:\n%s", out)
	}
	out, _, _ = kpaas(t, "bundle", "verify", dir)
	if !strings.Contains(out, "signature: present, not checked") {
		t.Errorf("output without key:\n%s", out)
	}

	// Damage one file's content: non-zero exit, the artifact named.
	s, _ := bundle.Open(dir)
	h, _, _ := v1.SHA256(bytes.NewReader(bytes.Repeat([]byte("kubelet\n"), 3000)))
	p, _ := s.BlobPath(h)
	b, _ := os.ReadFile(p)
	b[100] ^= 1
	os.WriteFile(p, b, 0o644)
	out, _, err = kpaas(t, "bundle", "verify", dir, "--key", key+".pub")
	if err == nil {
		t.Fatal("verify passed a damaged bundle")
	}
	if !strings.Contains(out, "problem: file kpaas.local/files/kubelet:v1.30.2: blob "+h.String()+" (layer 1 of manifest sha256:") {
		t.Errorf("output:\n%s", out)
	}
	out, _, err = kpaas(t, "bundle", "verify", dir, "--json")
	var r bundle.Report
	if jerr := json.Unmarshal([]byte(out), &r); jerr != nil || err == nil || len(r.Problems) != 1 || r.Problems[0].Blob != h.String() {
		t.Errorf("--json: err %v, %v, %+v\n%s", err, jerr, r, out)
	}
}

func TestBundleInspectCmd(t *testing.T) {
	dir, _ := testBundle(t)
	out, _, err := kpaas(t, "bundle", "inspect", dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"KIND  REF", "file  kpaas.local/files/kubeadm:v1.30.2", "2 artifacts, 5 distinct blobs", "saved by dedup 2 B"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
	out, _, err = kpaas(t, "bundle", "inspect", dir, "--json")
	var in bundle.Inspection
	if err != nil || json.Unmarshal([]byte(out), &in) != nil || in.Totals.SavedBytes != 2 {
		t.Errorf("--json: %v\n%s", err, out)
	}
}

func TestBundleExportImportCmd(t *testing.T) {
	dir, key := testBundle(t)
	work := t.TempDir()
	tarPath := filepath.Join(work, "b.tar")
	if out, _, err := kpaas(t, "bundle", "export", dir, "-o", tarPath); err != nil || !strings.Contains(out, "wrote "+tarPath) {
		t.Fatalf("export: %v\n%s", err, out)
	}
	if _, _, err := kpaas(t, "bundle", "export", dir, "-o", filepath.Join(work, "parts.tar"), "--split", "10"); err == nil || !strings.Contains(err.Error(), "at least 1.0 MiB") {
		t.Errorf("export --split 10: err = %v, want parts of at least 1 MiB", err)
	}
	out, _, err := kpaas(t, "bundle", "export", dir, "-o", filepath.Join(work, "parts.tar"), "--split", "1M")
	if err != nil {
		t.Fatalf("export --split: %v\n%s", err, out)
	}
	if n := strings.Count(out, "part "); n != 1 || !strings.Contains(out, "parts.tar.sha256sums") {
		t.Errorf("export --split printed %d part lines:\n%s", n, out)
	}
	for _, src := range []string{tarPath, filepath.Join(work, "parts.tar.000")} {
		dest := filepath.Join(t.TempDir(), "imported")
		out, _, err := kpaas(t, "bundle", "import", src, "-o", dest, "--key", key+".pub")
		if err != nil {
			t.Fatalf("import %s: %v\n%s", src, err, out)
		}
		if !strings.Contains(out, "signature: verified") {
			t.Errorf("import output:\n%s", out)
		}
		if out, _, err := kpaas(t, "bundle", "verify", dest, "--key", key+".pub"); err != nil {
			t.Errorf("verify imported: %v\n%s", err, out)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"512": 512, "8K": 8 << 10, "700M": 700 << 20, "700MiB": 700 << 20, "700MB": 700e6,
		"4G": 4 << 30, "4GB": 4e9, "1.5GiB": 3 << 29, "1.5g": 3 << 29, "2T": 2 << 40,
	} {
		got, err := parseSize(in)
		if err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "G", "4X", "-1", "0", "1.5.5G", "4 GiBs"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) accepted", in)
		}
	}
}
