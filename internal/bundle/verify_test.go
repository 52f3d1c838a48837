package bundle

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func TestVerifyGoodBundle(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	var last VerifyProgress
	r, err := f.store.Verify(ctx, VerifyOptions{PublicKey: f.pub, Progress: func(p VerifyProgress) { last = p }})
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if !r.OK() || r.Signature != SignatureVerified || r.KeyFingerprint != Fingerprint(f.pub) {
		t.Errorf("report = %+v", r)
	}
	if r.Artifacts != 4 {
		t.Errorf("artifacts = %d, want 4", r.Artifacts)
	}
	// nginx: index + 2×(manifest, config, own layer) + shared; busybox:
	// manifest, config, own; chart: manifest, config, archive; file:
	// manifest, {}, content.
	if r.Blobs != 17 {
		t.Errorf("blobs = %d, want 17", r.Blobs)
	}
	if last.BlobsDone != last.Blobs || last.BytesDone != r.Bytes || last.Blobs != r.Blobs {
		t.Errorf("last progress = %+v, report %d blobs %d bytes", last, r.Blobs, r.Bytes)
	}

	r, err = f.store.Verify(ctx, VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Signature != SignatureNotChecked {
		t.Errorf("signature without key = %q, want %q", r.Signature, SignatureNotChecked)
	}
	if err := os.Remove(f.store.Path(SignatureFile)); err != nil {
		t.Fatal(err)
	}
	if r, _ := f.store.Verify(ctx, VerifyOptions{}); r.Signature != SignatureAbsent || !r.OK() {
		t.Errorf("unsigned bundle without key: %+v", r)
	}
	r, err = f.store.Verify(ctx, VerifyOptions{PublicKey: f.pub})
	if err == nil || r.Signature != SignatureMissing {
		t.Errorf("unsigned bundle with key: err %v, report %+v", err, r)
	}
}

// TestVerifyFindsDamage damages a fresh bundle in one way per case and
// checks that Verify names the blob and every artifact that uses it.
func TestVerifyFindsDamage(t *testing.T) {
	type want struct {
		path     string // Problem.Path
		blob     func(f *fixture) v1.Hash
		contains []string // substrings of Problem.String()
	}
	cases := []struct {
		name   string
		damage func(t *testing.T, f *fixture)
		want   []want
	}{{
		name:   "flipped byte in a shared layer",
		damage: func(t *testing.T, f *fixture) { flipByte(t, f.blobPath(t, f.shared.Digest)) },
		want: []want{{
			blob: func(f *fixture) v1.Hash { return f.shared.Digest },
			contains: []string{
				// index.json order: busybox comes first.
				"image " + refBusybox + ": blob {shared} (layer 1 of manifest {busybox}): content has digest sha256:",
				"also used by image " + refNginx + " (layer 1 of linux/amd64 manifest {nginx/amd64})",
				"image " + refNginx + " (layer 1 of linux/arm64 manifest {nginx/arm64})",
			},
		}},
	}, {
		name:   "flipped byte in a config",
		damage: func(t *testing.T, f *fixture) { flipByte(t, f.blobPath(t, f.nginxConfig["linux/arm64"].Digest)) },
		want: []want{{
			blob:     func(f *fixture) v1.Hash { return f.nginxConfig["linux/arm64"].Digest },
			contains: []string{"image " + refNginx + ": blob {config/arm64} (config of linux/arm64 manifest {nginx/arm64}): content has digest"},
		}},
	}, {
		name:   "flipped byte in a manifest",
		damage: func(t *testing.T, f *fixture) { flipByte(t, f.blobPath(t, f.nginx["linux/amd64"].Digest)) },
		want: []want{{
			blob:     func(f *fixture) v1.Hash { return f.nginx["linux/amd64"].Digest },
			contains: []string{"image " + refNginx + ": blob {nginx/amd64} (linux/amd64 manifest of index {nginx}): content has digest"},
		}},
	}, {
		name:   "flipped byte in the chart archive",
		damage: func(t *testing.T, f *fixture) { flipByte(t, f.blobPath(t, chartLayer(t, f))) },
		want: []want{{
			blob:     func(f *fixture) v1.Hash { return chartLayer(t, f) },
			contains: []string{"chart " + refChart + ": blob {chartlayer} (layer 1 of manifest {chart}): content has digest"},
		}},
	}, {
		name: "flipped byte in index.json",
		damage: func(t *testing.T, f *fixture) {
			replaceIn(t, f.store.Path(IndexFile), "library/nginx", "library/ngiNx")
		},
		want: []want{
			{path: IndexFile, contains: []string{"index.json: content has digest sha256:", "SHA256SUMS lists sha256:"}},
			{path: LockFile, contains: []string{"kpaas-lock.json: image " + refNginx + ": in kpaas-lock.json but not in index.json"}},
			{path: LockFile, contains: []string{"kpaas-lock.json: image docker.io/library/ngiNx:1.25: in index.json but not in kpaas-lock.json"}},
		},
	}, {
		name: "flipped byte in the lock",
		damage: func(t *testing.T, f *fixture) {
			replaceIn(t, f.store.Path(LockFile), f.busybox.Digest.Hex[:8], "00000000")
		},
		want: []want{
			{path: LockFile, contains: []string{"kpaas-lock.json: content has digest sha256:", "SHA256SUMS lists"}},
			{path: LockFile, contains: []string{"image " + refBusybox + ": digest sha256:00000000"}},
		},
	}, {
		name: "truncated blob",
		damage: func(t *testing.T, f *fixture) {
			if err := os.Truncate(f.blobPath(t, f.nginxOwn["linux/arm64"].Digest), 100); err != nil {
				t.Fatal(err)
			}
		},
		want: []want{{
			blob:     func(f *fixture) v1.Hash { return f.nginxOwn["linux/arm64"].Digest },
			contains: []string{"image " + refNginx + ": blob {own/arm64} (layer 2 of linux/arm64 manifest {nginx/arm64}): truncated: size 100, want {own/arm64 size}"},
		}},
	}, {
		name: "missing blobs",
		damage: func(t *testing.T, f *fixture) {
			for _, h := range []v1.Hash{f.busyboxOwn.Digest, fileLayer(t, f)} {
				if err := os.Remove(f.blobPath(t, h)); err != nil {
					t.Fatal(err)
				}
			}
		},
		want: []want{{
			blob:     func(f *fixture) v1.Hash { return f.busyboxOwn.Digest },
			contains: []string{"image " + refBusybox + ": blob {busyboxown} (layer 2 of manifest {busybox}): missing"},
		}, {
			blob:     func(f *fixture) v1.Hash { return fileLayer(t, f) },
			contains: []string{"file " + refFile + ": blob {filelayer} (layer 1 of manifest {file}): missing"},
		}},
	}, {
		name:   "SHA256SUMS edited",
		damage: func(t *testing.T, f *fixture) { replaceIn(t, f.store.Path(SumsFile), "  "+IndexFile, "  index.jsom") },
		want: []want{
			{path: "index.jsom", contains: []string{"index.jsom: unexpected entry in SHA256SUMS"}},
			{path: IndexFile, contains: []string{"index.json: not listed in SHA256SUMS"}},
			{path: SignatureFile, contains: []string{"SHA256SUMS.sig: signature does not match"}},
		},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			names := map[string]string{
				"{shared}":         f.shared.Digest.String(),
				"{nginx}":          f.nginxIndex.Digest.String(),
				"{nginx/amd64}":    f.nginx["linux/amd64"].Digest.String(),
				"{nginx/arm64}":    f.nginx["linux/arm64"].Digest.String(),
				"{config/arm64}":   f.nginxConfig["linux/arm64"].Digest.String(),
				"{own/arm64}":      f.nginxOwn["linux/arm64"].Digest.String(),
				"{busybox}":        f.busybox.Digest.String(),
				"{busyboxown}":     f.busyboxOwn.Digest.String(),
				"{chart}":          f.chart.Digest.String(),
				"{chartlayer}":     chartLayer(t, f).String(),
				"{file}":           f.file.Digest.String(),
				"{filelayer}":      fileLayer(t, f).String(),
				"{own/arm64 size}": fmt.Sprint(f.nginxOwn["linux/arm64"].Size),
			}
			c.damage(t, f)
			r, err := f.store.Verify(context.Background(), VerifyOptions{PublicKey: f.pub})
			var ve *VerifyError
			if !errors.As(err, &ve) {
				t.Fatalf("Verify error = %v, want a *VerifyError", err)
			}
			if len(ve.Problems) != len(r.Problems) || r.OK() {
				t.Fatalf("error lists %d problems, report %d", len(ve.Problems), len(r.Problems))
			}
			for _, w := range c.want {
				found := false
				for _, p := range r.Problems {
					if w.path != "" && p.Path != w.path {
						continue
					}
					if w.blob != nil && p.Blob != w.blob(f).String() {
						continue
					}
					s := p.String()
					ok := true
					for _, sub := range w.contains {
						for k, v := range names {
							sub = strings.ReplaceAll(sub, k, v)
						}
						ok = ok && strings.Contains(s, sub)
					}
					found = found || ok
				}
				if !found {
					t.Errorf("no problem like %+v in:\n%s", w.contains, ve.Error())
				}
			}
			t.Logf("%s", ve.Error())
		})
	}
}

func chartLayer(t testing.TB, f *fixture) v1.Hash { return layerOf(t, f, f.chart) }
func fileLayer(t testing.TB, f *fixture) v1.Hash  { return layerOf(t, f, f.file) }

func layerOf(t testing.TB, f *fixture, d v1.Descriptor) v1.Hash {
	t.Helper()
	var m v1.Manifest
	readJSON(t, f.blobPath(t, d.Digest), &m)
	return m.Layers[0].Digest
}

// TestVerifyReportsEverything: several independent problems are all
// reported, each once.
func TestVerifyReportsEverything(t *testing.T) {
	f := newFixture(t)
	flipByte(t, f.blobPath(t, f.shared.Digest))
	flipByte(t, f.blobPath(t, f.nginxConfig["linux/amd64"].Digest))
	if err := os.Remove(f.blobPath(t, f.busyboxOwn.Digest)); err != nil {
		t.Fatal(err)
	}
	r, err := f.store.Verify(context.Background(), VerifyOptions{})
	if err == nil {
		t.Fatal("Verify passed a damaged bundle")
	}
	blobs := map[string]int{}
	for _, p := range r.Problems {
		blobs[p.Blob]++
	}
	for _, h := range []v1.Hash{f.shared.Digest, f.nginxConfig["linux/amd64"].Digest, f.busyboxOwn.Digest} {
		if blobs[h.String()] != 1 {
			t.Errorf("blob %s reported %d times, want once:\n%v", h, blobs[h.String()], err)
		}
	}
	if len(r.Problems) != 3 {
		t.Errorf("%d problems, want 3:\n%v", len(r.Problems), err)
	}
}

func TestVerifyCountsUnreferencedBlobs(t *testing.T) {
	f := newFixture(t)
	if _, err := f.store.WriteBlob(mustHash(t, []byte("left over")), 9, strings.NewReader("left over")); err != nil {
		t.Fatal(err)
	}
	r, err := f.store.Verify(context.Background(), VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Unreferenced != 1 {
		t.Errorf("unreferenced = %d, want 1", r.Unreferenced)
	}
}

func TestVerifyCancelled(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := f.store.Verify(ctx, VerifyOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}

func mustHash(t testing.TB, b []byte) v1.Hash {
	t.Helper()
	h, _, err := v1.SHA256(strings.NewReader(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestReportJSON: the JSON report says "ok", as lint's does.
func TestReportJSON(t *testing.T) {
	for _, r := range []*Report{{Signature: SignatureAbsent}, {Problems: []Problem{{Path: "index.json", Message: "bad"}}}} {
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		var got map[string]any
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		if ok, present := got["ok"].(bool); !present || ok != r.OK() {
			t.Errorf("%s: ok = %v, want %v", b, got["ok"], r.OK())
		}
		if _, present := got["problems"].([]any); !present {
			t.Errorf("%s: problems is not a list", b)
		}
	}
}
