package seed

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

type response struct {
	status int
	header http.Header
	body   []byte
}

func do(t testing.TB, method, url string, hdr ...string) response {
	t.Helper()
	req := must(http.NewRequest(method, url, nil))(t)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp := must(http.DefaultClient.Do(req))(t)
	defer resp.Body.Close()
	body := must(io.ReadAll(resp.Body))(t)
	return response{resp.StatusCode, resp.Header, body}
}

// errCode is the first OCI error code of a body.
func errCode(t testing.TB, b []byte) string {
	t.Helper()
	var eb errorBody
	if err := json.Unmarshal(b, &eb); err != nil || len(eb.Errors) == 0 {
		t.Fatalf("not an OCI error body: %q", b)
	}
	return eb.Errors[0].Code
}

func TestPullWithGGCR(t *testing.T) {
	f := newFixture(t)
	host, _ := f.serve(t)
	ctx := context.Background()

	// A multi-platform index: digest matches, every blob verifies.
	idxRef := must(name.ParseReference(host+"/"+refNginx, name.Insecure))(t)
	idx := must(remote.Index(idxRef, remote.WithContext(ctx)))(t)
	if got := must(idx.Digest())(t); got != f.nginx.Digest {
		t.Errorf("index digest %s, bundle has %s", got, f.nginx.Digest)
	}
	if err := validate.Index(idx); err != nil {
		t.Errorf("index does not validate: %v", err)
	}
	// The platform image a node would pick.
	img := must(remote.Image(idxRef, remote.WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"})))(t)
	if got := must(img.Digest())(t); got != f.nginxChild.Digest {
		t.Errorf("linux/amd64 image %s, want %s", got, f.nginxChild.Digest)
	}

	// A single image by tag and by digest.
	for _, r := range []string{host + "/" + refPause, host + "/registry.k8s.io/pause@" + f.pause.Digest.String()} {
		img := must(remote.Image(must(name.ParseReference(r, name.Insecure))(t)))(t)
		if got := must(img.Digest())(t); got != f.pause.Digest {
			t.Errorf("%s: digest %s, want %s", r, got, f.pause.Digest)
		}
		if err := validate.Image(img); err != nil {
			t.Errorf("%s: %v", r, err)
		}
	}

	// A chart: manifest and content layer.
	chartRef := must(name.ParseReference(host+"/"+refChart, name.Insecure))(t)
	desc := must(remote.Get(chartRef))(t)
	if desc.Digest != f.chart.Digest || desc.MediaType != types.OCIManifestSchema1 {
		t.Errorf("chart %s %s, want %s", desc.Digest, desc.MediaType, f.chart.Digest)
	}
	layer := must(remote.Layer(chartRef.Context().Digest(f.layers["ghcr.io/kpaas/charts/harbor"].String())))(t)
	rc := must(layer.Compressed())(t)
	n, err := io.Copy(io.Discard, rc) // ggcr verifies the digest at EOF
	rc.Close()
	if err != nil || n == 0 {
		t.Errorf("chart layer: %d bytes, %v", n, err)
	}

	// Tag listing and catalog through the client.
	tags := must(remote.List(must(name.NewRepository(host+"/docker.io/library/nginx", name.Insecure))(t)))(t)
	if strings.Join(tags, ",") != "1.25" {
		t.Errorf("tags %v", tags)
	}
	repos := must(remote.Catalog(ctx, must(name.NewRegistry(host, name.Insecure))(t)))(t)
	want := "docker.io/library/nginx,ghcr.io/kpaas/charts/harbor,quay.io/library/nginx,registry.k8s.io/coredns/coredns,registry.k8s.io/ingress-nginx/controller,registry.k8s.io/pause"
	if strings.Join(repos, ",") != want {
		t.Errorf("catalog %v\nwant %s", repos, want)
	}
}

// TestContainerdNamespace checks the requests containerd sends to a mirror:
// the repository path without registry and the upstream in ns.
func TestContainerdNamespace(t *testing.T) {
	f := newFixture(t)
	host, _ := f.serve(t)
	base := "http://" + host
	for _, tc := range []struct {
		path string
		want v1.Hash
	}{
		{"/v2/library/nginx/manifests/1.25?ns=docker.io", f.nginx.Digest},
		{"/v2/library/nginx/manifests/1.25?ns=quay.io", f.quayNginx.Digest},
		{"/v2/library/nginx/manifests/1.25?ns=index.docker.io", f.nginx.Digest},
		{"/v2/pause/manifests/3.10?ns=registry.k8s.io", f.pause.Digest},
		{"/v2/docker.io/library/nginx/manifests/1.25", f.nginx.Digest},
		{"/v2/quay.io/library/nginx/manifests/1.25", f.quayNginx.Digest},
		{"/v2/library/nginx/manifests/1.25", f.nginx.Digest}, // docker.io fallback
		{"/v2/nginx/manifests/1.25", f.nginx.Digest},         // and its library/
		{"/v2/library/nginx/manifests/" + f.nginxChild.Digest.String() + "?ns=docker.io", f.nginxChild.Digest},
	} {
		r := do(t, http.MethodGet, base+tc.path, "Accept", string(types.OCIImageIndex)+","+string(types.DockerManifestSchema2))
		if r.status != http.StatusOK {
			t.Errorf("%s: status %d %s", tc.path, r.status, r.body)
			continue
		}
		if got := r.header.Get("Docker-Content-Digest"); got != tc.want.String() {
			t.Errorf("%s: digest %s, want %s", tc.path, got, tc.want)
		}
		h, _, _ := v1.SHA256(bytes.NewReader(r.body))
		if h != tc.want {
			t.Errorf("%s: body has digest %s, want %s", tc.path, h, tc.want)
		}
	}
	// A blob through ns: only the repository's own.
	layer := f.layers["quay.io/library/nginx"]
	if r := do(t, http.MethodGet, base+"/v2/library/nginx/blobs/"+layer.String()+"?ns=quay.io"); r.status != http.StatusOK {
		t.Errorf("quay layer via ns: %d", r.status)
	}
	if r := do(t, http.MethodGet, base+"/v2/library/nginx/blobs/"+layer.String()+"?ns=docker.io"); r.status != http.StatusNotFound || errCode(t, r.body) != codeBlobUnknown {
		t.Errorf("quay layer asked of docker.io: %d %s", r.status, r.body)
	}

	// Without the docker.io fallback, a bare path names nothing.
	host2, _ := f.serve(t, WithDefaultRegistry(""))
	if r := do(t, http.MethodGet, "http://"+host2+"/v2/library/nginx/manifests/1.25"); r.status != http.StatusNotFound || errCode(t, r.body) != codeNameUnknown {
		t.Errorf("no fallback: %d %s", r.status, r.body)
	}
}

func TestManifestHeaders(t *testing.T) {
	f := newFixture(t)
	host, _ := f.serve(t)
	for _, d := range []v1.Descriptor{f.nginx, f.pause, f.chart, f.sbom} {
		url := "http://" + host + "/v2/docker.io/library/nginx/manifests/" + d.Digest.String()
		switch d.Digest {
		case f.pause.Digest:
			url = "http://" + host + "/v2/registry.k8s.io/pause/manifests/3.10"
		case f.chart.Digest:
			url = "http://" + host + "/v2/ghcr.io/kpaas/charts/harbor/manifests/1.10.0"
		}
		get := do(t, http.MethodGet, url)
		head := do(t, http.MethodHead, url)
		for _, r := range []response{get, head} {
			if r.status != http.StatusOK {
				t.Fatalf("%s: %d %s", url, r.status, r.body)
			}
			if ct := r.header.Get("Content-Type"); ct != string(d.MediaType) {
				t.Errorf("%s: Content-Type %q, want %q", url, ct, d.MediaType)
			}
			if cl := r.header.Get("Content-Length"); cl != fmt.Sprint(d.Size) {
				t.Errorf("%s: Content-Length %s, want %d", url, cl, d.Size)
			}
			if dg := r.header.Get("Docker-Content-Digest"); dg != d.Digest.String() {
				t.Errorf("%s: digest %s", url, dg)
			}
		}
		if len(head.body) != 0 {
			t.Errorf("HEAD %s has a body", url)
		}
		if int64(len(get.body)) != d.Size {
			t.Errorf("GET %s: %d bytes, want %d", url, len(get.body), d.Size)
		}
	}
}

// TestFilteredIndexByUpstreamDigest: a pull by the upstream digest of an
// index the bundle filtered is answered with the stored index, whose real
// digest the response names.
func TestFilteredIndexByUpstreamDigest(t *testing.T) {
	f := newFixture(t)
	host, _ := f.serve(t)
	for _, ref := range []string{"v1.4.0", f.upstreamIdx.String(), f.controller.Digest.String()} {
		r := do(t, http.MethodGet, "http://"+host+"/v2/ingress-nginx/controller/manifests/"+ref+"?ns=registry.k8s.io")
		if r.status != http.StatusOK || r.header.Get("Docker-Content-Digest") != f.controller.Digest.String() {
			t.Errorf("%s: %d digest %q, want %s", ref, r.status, r.header.Get("Docker-Content-Digest"), f.controller.Digest)
		}
	}
}

// TestSparseIndex: an upstream index stored unchanged with only some of
// its platforms is served under its own (upstream) digest, which clients
// verify; the left-out platforms are unknown manifests, not damage.
func TestSparseIndex(t *testing.T) {
	f := newFixture(t)
	host, logs := f.serve(t)
	d := must(name.NewDigest(host+"/registry.k8s.io/coredns/coredns@"+f.coredns.Digest.String(), name.Insecure))(t)
	if got := must(remote.Get(d))(t); got.Digest != f.coredns.Digest {
		t.Errorf("by digest: %s", got.Digest)
	}
	tag := must(name.NewTag(host+"/"+refCoreDNS, name.Insecure))(t)
	img := must(remote.Image(tag, remote.WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"})))(t)
	if err := validate.Image(img); err != nil {
		t.Errorf("amd64 image: %v", err)
	}
	r := do(t, http.MethodGet, "http://"+host+"/v2/coredns/coredns/manifests/"+f.corednsArm.String()+"?ns=registry.k8s.io")
	if r.status != http.StatusNotFound || errCode(t, r.body) != codeManifestUnknown {
		t.Errorf("left-out platform: %d %s", r.status, r.body)
	}
	if strings.Contains(logs.String(), "level=ERROR") || strings.Contains(logs.String(), "level=WARN") {
		t.Errorf("a sparse index is not damage:\n%s", logs)
	}
}

func TestBlobHeadAndRange(t *testing.T) {
	f := newFixture(t)
	host, _ := f.serve(t)
	layer := f.layers["registry.k8s.io/pause"]
	content := must(f.store.ReadBlob(layer))(t)
	url := "http://" + host + "/v2/registry.k8s.io/pause/blobs/" + layer.String()

	head := do(t, http.MethodHead, url)
	if head.status != http.StatusOK || head.header.Get("Content-Length") != fmt.Sprint(len(content)) ||
		head.header.Get("Docker-Content-Digest") != layer.String() || len(head.body) != 0 {
		t.Errorf("HEAD: %d %v", head.status, head.header)
	}
	full := do(t, http.MethodGet, url)
	if full.status != http.StatusOK || !bytes.Equal(full.body, content) {
		t.Errorf("GET: %d, %d bytes", full.status, len(full.body))
	}
	if full.header.Get("Accept-Ranges") != "bytes" {
		t.Errorf("no Accept-Ranges: %v", full.header)
	}
	part := do(t, http.MethodGet, url, "Range", "bytes=10-109")
	if part.status != http.StatusPartialContent || !bytes.Equal(part.body, content[10:110]) {
		t.Errorf("Range: %d, %d bytes", part.status, len(part.body))
	}
	if cr := part.header.Get("Content-Range"); cr != fmt.Sprintf("bytes 10-109/%d", len(content)) {
		t.Errorf("Content-Range %q", cr)
	}
	tail := do(t, http.MethodGet, url, "Range", "bytes=-5")
	if tail.status != http.StatusPartialContent || !bytes.Equal(tail.body, content[len(content)-5:]) {
		t.Errorf("suffix range: %d %q", tail.status, tail.body)
	}
	if r := do(t, http.MethodGet, url, "Range", fmt.Sprintf("bytes=%d-", len(content)+10)); r.status != http.StatusRequestedRangeNotSatisfiable {
		t.Errorf("range past the end: %d", r.status)
	}
	// A manifest is a blob too.
	if r := do(t, http.MethodGet, "http://"+host+"/v2/registry.k8s.io/pause/blobs/"+f.pause.Digest.String()); r.status != http.StatusOK || int64(len(r.body)) != f.pause.Size {
		t.Errorf("manifest as blob: %d", r.status)
	}
}

func TestWritesRefused(t *testing.T) {
	f := newFixture(t)
	host, _ := f.serve(t)
	base := "http://" + host
	layer := f.layers["docker.io/library/nginx"].String()
	for _, m := range []string{http.MethodPut, http.MethodPost, http.MethodPatch, http.MethodDelete} {
		for _, p := range []string{
			"/v2/docker.io/library/nginx/manifests/1.25",
			"/v2/library/nginx/manifests/1.25?ns=docker.io",
			"/v2/docker.io/library/nginx/blobs/" + layer,
			"/v2/docker.io/library/nginx/blobs/uploads/",
			"/v2/docker.io/library/nginx/blobs/uploads/abc",
			"/v2/new/repo/blobs/uploads/?mount=" + layer + "&from=docker.io/library/nginx",
		} {
			r := do(t, m, base+p)
			if r.status != http.StatusMethodNotAllowed || errCode(t, r.body) != codeUnsupported {
				t.Errorf("%s %s: %d %s", m, p, r.status, r.body)
			}
		}
	}
	// Nothing changed: the tag is still there.
	if r := do(t, http.MethodGet, base+"/v2/docker.io/library/nginx/manifests/1.25"); r.status != http.StatusOK {
		t.Errorf("after writes: %d", r.status)
	}
}

func TestNotFoundCodes(t *testing.T) {
	f := newFixture(t)
	host, _ := f.serve(t)
	base := "http://" + host
	missing := "sha256:" + strings.Repeat("ab", 32)
	for _, tc := range []struct {
		path, code string
	}{
		{"/v2/docker.io/library/nosuch/manifests/1.0", codeNameUnknown},
		{"/v2/nosuch/manifests/1.0?ns=quay.io", codeNameUnknown},
		{"/v2/docker.io/library/nosuch/tags/list", codeNameUnknown},
		{"/v2/docker.io/library/nginx/manifests/9.9", codeManifestUnknown},
		{"/v2/docker.io/library/nginx/manifests/" + missing, codeManifestUnknown},
		{"/v2/docker.io/library/nginx/manifests/sha512:" + strings.Repeat("ab", 64), codeManifestUnknown},
		{"/v2/docker.io/library/nginx/blobs/" + missing, codeBlobUnknown},
		// A blob of another repository is not served here.
		{"/v2/docker.io/library/nginx/blobs/" + f.layers["registry.k8s.io/pause"].String(), codeBlobUnknown},
		{"/v2/docker.io/library/nginx/manifests/" + f.pause.Digest.String(), codeManifestUnknown},
		{"/v2/docker.io/library/nginx/nosuch/endpoint", codeUnsupported},
		{"/v3/", codeUnsupported},
	} {
		for _, m := range []string{http.MethodGet, http.MethodHead} {
			r := do(t, m, base+tc.path)
			if r.status != http.StatusNotFound {
				t.Errorf("%s %s: %d, want 404", m, tc.path, r.status)
				continue
			}
			if m == http.MethodGet && errCode(t, r.body) != tc.code {
				t.Errorf("%s: code %s, want %s", tc.path, errCode(t, r.body), tc.code)
			}
		}
	}
}

// rawGet sends a request line as written, with no client-side cleaning.
func rawGet(t *testing.T, host, target string) (int, string) {
	t.Helper()
	c := must(net.DialTimeout("tcp", host, 5*time.Second))(t)
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", target, host)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%s: %v", target, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestBadNamesAndDigests(t *testing.T) {
	f := newFixture(t)
	host, _ := f.serve(t)
	good := f.layers["docker.io/library/nginx"].String()
	for _, tc := range []struct {
		target string
		code   string
	}{
		{"/v2/../../etc/passwd/blobs/" + good, codeNameInvalid},
		{"/v2/%2e%2e/%2e%2e/etc/passwd/blobs/" + good, codeNameInvalid},
		{"/v2/docker.io/library/nginx/../../../../etc/blobs/" + good, codeNameInvalid},
		{"/v2/library/nginx/blobs/" + good + "?ns=../../etc", codeNameInvalid},
		{"/v2/library/nginx/blobs/" + good + "?ns=docker.io%2F..", codeNameInvalid},
		{"/v2/Library/Nginx/manifests/1.25", codeNameInvalid},
		{"/v2/docker.io/library/nginx/blobs/sha256:..%2F..%2F..%2Fetc%2Fpasswd", codeDigestInvalid},
		{"/v2/docker.io/library/nginx/blobs/sha256:" + strings.ToUpper(good[7:]), codeDigestInvalid},
		{"/v2/docker.io/library/nginx/blobs/sha256:abc", codeDigestInvalid},
		{"/v2/docker.io/library/nginx/blobs/md5:d41d8cd98f00b204e9800998ecf8427e", codeDigestInvalid},
		{"/v2/docker.io/library/nginx/manifests/sha256:baddigeststring", codeDigestInvalid},
		{"/v2/docker.io/library/nginx/referrers/sha256:zz", codeDigestInvalid},
		{"/v2/docker.io/library/nginx/manifests/-bad-tag", codeTagInvalid},
		{"/v2/docker.io/library/nginx/tags/list?n=-1", codePagination},
		{"/v2/_catalog?n=x", codePagination},
	} {
		status, body := rawGet(t, host, tc.target)
		if status != http.StatusBadRequest {
			t.Errorf("%s: status %d, want 400 (%s)", tc.target, status, body)
			continue
		}
		if got := errCode(t, []byte(body)); got != tc.code {
			t.Errorf("%s: code %s, want %s", tc.target, got, tc.code)
		}
		if strings.Contains(body, "root:") {
			t.Fatalf("%s served a file outside the bundle", tc.target)
		}
	}
}

func TestTagsAndCatalogPagination(t *testing.T) {
	f := newFixture(t)
	host, _ := f.serve(t)
	base := "http://" + host
	r := do(t, http.MethodGet, base+"/v2/_catalog?n=2")
	var cat struct{ Repositories []string }
	json.Unmarshal(r.body, &cat)
	if strings.Join(cat.Repositories, ",") != "docker.io/library/nginx,ghcr.io/kpaas/charts/harbor" {
		t.Errorf("first page %v", cat.Repositories)
	}
	link := r.header.Get("Link")
	if !strings.Contains(link, `rel="next"`) || !strings.Contains(link, "last=ghcr.io%2Fkpaas%2Fcharts%2Fharbor") {
		t.Errorf("Link %q", link)
	}
	next := strings.TrimPrefix(strings.SplitN(link, ">", 2)[0], "<")
	r = do(t, http.MethodGet, base+next)
	json.Unmarshal(r.body, &cat)
	if strings.Join(cat.Repositories, ",") != "quay.io/library/nginx,registry.k8s.io/coredns/coredns" {
		t.Errorf("second page %v", cat.Repositories)
	}
	r = do(t, http.MethodGet, base+"/v2/_catalog?last=registry.k8s.io/ingress-nginx/controller")
	json.Unmarshal(r.body, &cat)
	if strings.Join(cat.Repositories, ",") != "registry.k8s.io/pause" || r.header.Get("Link") != "" {
		t.Errorf("last page %v, Link %q", cat.Repositories, r.header.Get("Link"))
	}

	var tl struct {
		Name string
		Tags []string
	}
	r = do(t, http.MethodGet, base+"/v2/library/nginx/tags/list?ns=docker.io")
	json.Unmarshal(r.body, &tl)
	if r.status != http.StatusOK || tl.Name != "library/nginx" || strings.Join(tl.Tags, ",") != "1.25" {
		t.Errorf("tags: %d %s", r.status, r.body)
	}
	r = do(t, http.MethodGet, base+"/v2/docker.io/library/nginx/tags/list?n=0")
	json.Unmarshal(r.body, &tl)
	if r.status != http.StatusOK || len(tl.Tags) != 0 || tl.Tags == nil {
		t.Errorf("n=0: %d %s", r.status, r.body)
	}
	// A digest-only reference has no tag.
	r = do(t, http.MethodGet, base+"/v2/registry.k8s.io/ingress-nginx/controller/tags/list")
	json.Unmarshal(r.body, &tl)
	if strings.Join(tl.Tags, ",") != "v1.4.0" {
		t.Errorf("controller tags %s", r.body)
	}
}

func TestReferrers(t *testing.T) {
	f := newFixture(t)
	host, _ := f.serve(t)
	base := "http://" + host + "/v2/docker.io/library/nginx/referrers/"
	var idx v1.IndexManifest
	r := do(t, http.MethodGet, base+f.nginx.Digest.String())
	if r.status != http.StatusOK || r.header.Get("Content-Type") != string(types.OCIImageIndex) {
		t.Fatalf("referrers: %d %v", r.status, r.header)
	}
	json.Unmarshal(r.body, &idx)
	if len(idx.Manifests) != 1 || idx.Manifests[0].Digest != f.sbom.Digest || idx.Manifests[0].ArtifactType != sbomType ||
		idx.Manifests[0].Size != f.sbom.Size || idx.Manifests[0].Annotations["org.example.kind"] != "sbom" {
		t.Errorf("referrers %s", r.body)
	}
	// Filtered.
	r = do(t, http.MethodGet, base+f.nginx.Digest.String()+"?artifactType=application/other")
	idx = v1.IndexManifest{}
	json.Unmarshal(r.body, &idx)
	if r.header.Get("OCI-Filters-Applied") != "artifactType" || len(idx.Manifests) != 0 || idx.MediaType != types.OCIImageIndex {
		t.Errorf("filtered referrers: %v %s", r.header, r.body)
	}
	// None: an empty index, not 404.
	r = do(t, http.MethodGet, base+f.nginxChild.Digest.String())
	if r.status != http.StatusOK || !strings.Contains(string(r.body), `"manifests":[]`) {
		t.Errorf("no referrers: %d %s", r.status, r.body)
	}
	// The client's view (ggcr uses the referrers API).
	d := must(name.NewDigest(host+"/docker.io/library/nginx@"+f.nginx.Digest.String(), name.Insecure))(t)
	ri := must(remote.Referrers(d))(t)
	im := must(ri.IndexManifest())(t)
	if len(im.Manifests) != 1 || im.Manifests[0].Digest != f.sbom.Digest {
		t.Errorf("remote.Referrers %v", im.Manifests)
	}
}

func TestCorruptedContentIsNotServed(t *testing.T) {
	f := newFixture(t)
	host, logs := f.serve(t)
	base := "http://" + host

	layer := f.layers["registry.k8s.io/pause"]
	url := base + "/v2/registry.k8s.io/pause/blobs/" + layer.String()
	if r := do(t, http.MethodGet, url); r.status != http.StatusOK {
		t.Fatalf("before: %d", r.status)
	}
	// Flip one byte in place (same size), with a new modification time as
	// any rewrite has: the remembered verdict no longer applies.
	p := must(f.store.BlobPath(layer))(t)
	b := must(os.ReadFile(p))(t)
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(2 * time.Second)
	os.Chtimes(p, later, later)

	for _, m := range []string{http.MethodGet, http.MethodHead} {
		for _, rng := range []string{"", "bytes=0-9"} {
			var hdr []string
			if rng != "" {
				hdr = []string{"Range", rng}
			}
			r := do(t, m, url, hdr...)
			if r.status != http.StatusInternalServerError {
				t.Errorf("%s %q: status %d, want 500", m, rng, r.status)
			}
			if bytes.Contains(r.body, b[:10]) {
				t.Errorf("%s %q: corrupted bytes were sent", m, rng)
			}
			if m == http.MethodGet && errCode(t, r.body) != codeCorrupted {
				t.Errorf("code %s", errCode(t, r.body))
			}
		}
	}
	log := logs.String()
	if !strings.Contains(log, "level=ERROR") || !strings.Contains(log, layer.String()) || !strings.Contains(log, refPause) {
		t.Errorf("the log does not name the blob and its artifact:\n%s", log)
	}

	// A truncated blob, never served before.
	other := f.layers["quay.io/library/nginx"]
	p2 := must(f.store.BlobPath(other))(t)
	os.Truncate(p2, 100)
	if r := do(t, http.MethodGet, base+"/v2/quay.io/library/nginx/blobs/"+other.String()); r.status != http.StatusInternalServerError {
		t.Errorf("truncated blob: %d", r.status)
	}

	// A manifest is verified on every read.
	mp := must(f.store.BlobPath(f.chart.Digest))(t)
	mb := must(os.ReadFile(mp))(t)
	if err := os.WriteFile(mp, bytes.Replace(mb, []byte("schemaVersion"), []byte("schemaVersiom"), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := do(t, http.MethodGet, base+"/v2/ghcr.io/kpaas/charts/harbor/manifests/1.10.0"); r.status != http.StatusInternalServerError || errCode(t, r.body) != codeCorrupted {
		t.Errorf("corrupted manifest: %d %s", r.status, r.body)
	}

	// Restored content is served again.
	b[len(b)/2] ^= 0xff
	os.WriteFile(p, b, 0o644)
	os.Chtimes(p, later.Add(time.Second), later.Add(time.Second))
	if r := do(t, http.MethodGet, url); r.status != http.StatusOK {
		t.Errorf("restored blob: %d", r.status)
	}
}

// TestVerifiesOnce checks that a blob is hashed once however many clients
// ask for it at the same time, and that the answer is shared.
func TestVerifiesOnce(t *testing.T) {
	f := newFixture(t)
	srv := must(New(f.store))(t)
	layer := f.layers["docker.io/library/nginx"]
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fh, err := srv.openVerified(layer, srv.cat.repos["docker.io/library/nginx"].blobs[layer].size)
			if err == nil {
				fh.Close()
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := len(srv.verified.verdicts); n != 1 {
		t.Errorf("%d verdicts, want 1", n)
	}
}

// TestConcurrentPulls has many clients pull every image at once.
func TestConcurrentPulls(t *testing.T) {
	f := newFixture(t)
	host, _ := f.serve(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	refs := []string{refNginx, refQuayNginx, refPause}
	var wg sync.WaitGroup
	errs := make(chan error, 48)
	for i := range 48 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := refs[i%len(refs)]
			ref, err := name.ParseReference(host+"/"+r, name.Insecure)
			if err != nil {
				errs <- err
				return
			}
			img, err := remote.Image(ref, remote.WithContext(ctx), remote.WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"}))
			if err == nil {
				err = validate.Image(img)
			}
			if err != nil {
				errs <- fmt.Errorf("%s: %w", r, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestPing(t *testing.T) {
	f := newFixture(t)
	host, _ := f.serve(t)
	for _, p := range []string{"/v2/", "/v2"} {
		r := do(t, http.MethodGet, "http://"+host+p)
		if r.status != http.StatusOK || r.header.Get("Docker-Distribution-API-Version") != "registry/2.0" {
			t.Errorf("%s: %d %v", p, r.status, r.header)
		}
	}
}

func TestRequestLogAtDebugOnly(t *testing.T) {
	f := newFixture(t)
	host, logs := f.serve(t)
	do(t, http.MethodGet, "http://"+host+"/v2/")
	if !strings.Contains(logs.String(), "level=DEBUG msg=request method=GET uri=/v2/ status=200") {
		t.Errorf("no request line at debug level:\n%s", logs)
	}
}

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:5000": true, "localhost:5000": true, "[::1]:5000": true, "127.1.2.3:0": true,
		":5000": false, "0.0.0.0:5000": false, "10.0.0.1:5000": false, "[::]:5000": false, "example.com:80": false, "nonsense": false,
	} {
		if got := IsLoopback(addr); got != want {
			t.Errorf("IsLoopback(%q) = %v", addr, got)
		}
	}
}

// TestBlobRangeRFC9110: the Range edge cases http.ServeContent gets wrong
// answer as RFC 9110 §14 says.
func TestBlobRangeRFC9110(t *testing.T) {
	f := newFixture(t)
	host, _ := f.serve(t)
	layer := f.layers["registry.k8s.io/pause"]
	content := must(f.store.ReadBlob(layer))(t)
	url := "http://" + host + "/v2/registry.k8s.io/pause/blobs/" + layer.String()

	// A suffix of length zero is unsatisfiable.
	r := do(t, http.MethodGet, url, "Range", "bytes=-0")
	if r.status != http.StatusRequestedRangeNotSatisfiable || r.header.Get("Content-Range") != fmt.Sprintf("bytes */%d", len(content)) {
		t.Errorf("bytes=-0: %d, Content-Range %q; want 416, bytes */%d", r.status, r.header.Get("Content-Range"), len(content))
	}
	// ... but other ranges beside it are served.
	r = do(t, http.MethodGet, url, "Range", "bytes=-0,0-9")
	if r.status != http.StatusPartialContent || !bytes.Equal(r.body, content[:10]) || r.header.Get("Content-Range") != fmt.Sprintf("bytes 0-9/%d", len(content)) {
		t.Errorf("bytes=-0,0-9: %d, %d bytes, Content-Range %q", r.status, len(r.body), r.header.Get("Content-Range"))
	}
	// An unknown unit is ignored: the whole blob.
	r = do(t, http.MethodGet, url, "Range", "items=0-5")
	if r.status != http.StatusOK || !bytes.Equal(r.body, content) {
		t.Errorf("items=0-5: %d, %d bytes; want 200 and the whole blob", r.status, len(r.body))
	}
	// Units compare case-insensitively.
	r = do(t, http.MethodGet, url, "Range", "Bytes=0-9")
	if r.status != http.StatusPartialContent || !bytes.Equal(r.body, content[:10]) {
		t.Errorf("Bytes=0-9: %d, %d bytes; want 206 and 10 bytes", r.status, len(r.body))
	}
}

// Every manifest served by GET leaves a pull record at info level (a
// node's audit of what its seed served); HEAD requests do not.
func TestPullRecordAtInfo(t *testing.T) {
	f := newFixture(t)
	host, logs := f.serve(t)
	do(t, http.MethodHead, "http://"+host+"/v2/library/nginx/manifests/1.25?ns=docker.io")
	if strings.Contains(logs.String(), "msg=pull") {
		t.Errorf("a HEAD left a pull record:\n%s", logs)
	}
	do(t, http.MethodGet, "http://"+host+"/v2/library/nginx/manifests/1.25?ns=docker.io")
	want := "level=INFO msg=pull repository=docker.io/library/nginx reference=1.25 digest=" + f.nginx.Digest.String()
	if !strings.Contains(logs.String(), want) {
		t.Errorf("no %q in:\n%s", want, logs)
	}
}
