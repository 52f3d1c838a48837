package cli

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"

	"kpaas.dev/appliance/internal/bundle"
)

func TestServeCmd(t *testing.T) {
	dir := t.TempDir()
	s, err := bundle.Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	img, err := random.Image(512, 1)
	if err != nil {
		t.Fatal(err)
	}
	d, err := s.NewWriter().WriteImage(context.Background(), img)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetEntries([]v1.Descriptor{bundle.Annotate(d, bundle.KindImage, "registry.k8s.io/pause:3.10")}); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	outR, outW := io.Pipe()
	errR, errW := io.Pipe()
	go io.Copy(io.Discard, errR)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, []string{"serve", dir, "--addr", "127.0.0.1:0", "--debug"}, strings.NewReader(""), outW, errW)
		outW.Close()
		errW.Close()
	}()
	line, err := bufio.NewReader(outR).ReadString('\n')
	if err != nil {
		t.Fatalf("no first line: %v (%v)", err, <-done)
	}
	m := regexp.MustCompile(`^serving 1 artifacts in 1 repositories from .* on http://(127\.0\.0\.1:\d+)\n$`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("first line %q", line)
	}
	resp, err := http.Get("http://" + m[1] + "/v2/pause/manifests/3.10?ns=registry.k8s.io")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Docker-Content-Digest") != d.Digest.String() {
		t.Errorf("GET manifest: %d %v", resp.StatusCode, resp.Header)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve returned %v after cancel", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop")
	}
}

func TestServeCmdRefusesRemote(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:5000", ":5000", "10.1.2.3:5000"} {
		_, _, err := kpaas(t, "serve", t.TempDir(), "--addr", addr)
		if err == nil || !strings.Contains(err.Error(), "--allow-remote") {
			t.Errorf("--addr %s: %v", addr, err)
		}
	}
}
