package source_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kpaas.dev/appliance/api/bundle/v1alpha1"
	"kpaas.dev/appliance/builder/charts"
	"kpaas.dev/appliance/builder/source"
)

// chartRepo serves a Helm chart repository (index.yaml + one package) and
// a file on 127.0.0.1.
func chartRepo(t *testing.T, tamper bool) (url string, pkg []byte) {
	t.Helper()
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "templates"), 0o755)
	os.WriteFile(filepath.Join(dir, "Chart.yaml"), []byte("apiVersion: v2\nname: vault\nversion: 0.22.0\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "templates", "cm.yaml"), []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"), 0o644)
	c, err := charts.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := charts.Package(c, &buf, time.Unix(0, 0)); err != nil {
		t.Fatal(err)
	}
	pkg = buf.Bytes()
	sum := sha256.Sum256(pkg)
	digest := hex.EncodeToString(sum[:])
	if tamper {
		digest = strings.Repeat("0", 64)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/repo/index.yaml", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "apiVersion: v1\nentries:\n  vault:\n    - version: 0.21.0\n      urls: [old.tgz]\n    - version: 0.22.0\n      urls: [pkgs/vault-0.22.0.tgz]\n      digest: %s\n", digest)
	})
	mux.HandleFunc("/repo/pkgs/vault-0.22.0.tgz", func(w http.ResponseWriter, r *http.Request) { w.Write(pkg) })
	mux.HandleFunc("/files/kubeadm", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "kubeadm bytes") })
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL, pkg
}

func TestFetchChartFromRepository(t *testing.T) {
	url, pkg := chartRepo(t, false)
	f := &source.Fetcher{}
	c, err := f.FetchChart(context.Background(), v1alpha1.Chart{Name: "vault", Source: url + "/repo", Version: "0.22.0"})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(c.Archive, pkg) || c.Ref != "kpaas.local/charts/vault:0.22.0" {
		t.Errorf("FetchChart = ref %s, %d bytes; want the served package", c.Ref, len(c.Archive))
	}
	if _, err := f.FetchChart(context.Background(), v1alpha1.Chart{Name: "vault", Source: url + "/repo", Version: "9.9.9"}); err == nil || !strings.Contains(err.Error(), "version 9.9.9 not in") {
		t.Errorf("missing version: err = %v", err)
	}
	off := &source.Fetcher{Offline: true}
	if _, err := off.FetchChart(context.Background(), v1alpha1.Chart{Name: "vault", Source: url + "/repo", Version: "0.22.0"}); err == nil || !strings.Contains(err.Error(), "--offline") {
		t.Errorf("offline without mirror: err = %v", err)
	}
}

func TestFetchChartDigestMismatch(t *testing.T) {
	url, _ := chartRepo(t, true)
	f := &source.Fetcher{}
	_, err := f.FetchChart(context.Background(), v1alpha1.Chart{Name: "vault", Source: url + "/repo", Version: "0.22.0"})
	if err == nil || !strings.Contains(err.Error(), "the repository index says") {
		t.Fatalf("err = %v, want a digest mismatch", err)
	}
}

func TestOpenFileFromURL(t *testing.T) {
	url, _ := chartRepo(t, false)
	f := &source.Fetcher{}
	rc, _, src, err := f.OpenFile(context.Background(), v1alpha1.File{Name: "kubeadm", Source: url + "/files/kubeadm"})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	if string(b) != "kubeadm bytes" || src != url+"/files/kubeadm" {
		t.Errorf("OpenFile = %q from %s", b, src)
	}
	if _, _, _, err := f.OpenFile(context.Background(), v1alpha1.File{Name: "x", Source: url + "/files/absent"}); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("absent URL: err = %v", err)
	}
}
