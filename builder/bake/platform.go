package bake

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"kpaas.dev/appliance/api/bundle/v1alpha1"
	"kpaas.dev/appliance/internal/bundle"
	"kpaas.dev/appliance/internal/platform"
)

// releaseArtifact is one platform release as the bake sees it: for a
// manifests release, its YAML stream (stored as a file artifact) and the
// images its objects name.
type releaseArtifact struct {
	spec   v1alpha1.Release
	stream []byte // manifests only
	ref    string // the manifests artifact's reference
	images []string
}

// loadPlatform reads every manifests release's files (a folder: every
// .yaml, .yml and .json in it, recursively, sorted) into one stream, or
// renders its kustomization, and lists the images its objects name, so
// that they join the completeness check. Charts releases need nothing
// more: their chart was rendered by the charts step.
func loadPlatform(ctx context.Context, st *state) error {
	p := st.manifest.Platform
	if p == nil {
		return nil
	}
	base := filepath.Dir(st.opts.Manifest)
	var errs []string
	for _, r := range p.Releases {
		a := &releaseArtifact{spec: r}
		var stream []byte
		var err error
		switch {
		case r.Kustomize != "":
			stream, err = Kustomize(base, r.Kustomize)
		case len(r.Manifests) > 0:
			stream, err = readManifests(base, r.Manifests)
		}
		if stream != nil || err != nil {
			if err != nil {
				errs = append(errs, fmt.Sprintf("platform release %q: %v", r.Name, err))
				continue
			}
			objs, err := platform.Decode(stream)
			if err != nil {
				errs = append(errs, fmt.Sprintf("platform release %q: %v", r.Name, err))
				continue
			}
			sum := sha256.Sum256(stream)
			a.stream = stream
			a.ref = "kpaas.local/manifests/" + r.Name + ":" + hex.EncodeToString(sum[:])[:12]
			a.images = platform.Images(objs)
		}
		st.platform = append(st.platform, a)
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "\n"))
	}
	return nil
}

// readManifests concatenates the YAML of paths (files, or folders read
// recursively in lexical order) as one stream of documents.
func readManifests(base string, paths []string) ([]byte, error) {
	var files []string
	for _, p := range paths {
		full := filepath.Join(base, filepath.FromSlash(p))
		fi, err := os.Stat(full)
		if err != nil {
			return nil, err
		}
		if !fi.IsDir() {
			files = append(files, full)
			continue
		}
		var found []string
		err = filepath.WalkDir(full, func(f string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			switch strings.ToLower(filepath.Ext(f)) {
			case ".yaml", ".yml", ".json":
				if !d.IsDir() {
					found = append(found, f)
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		if len(found) == 0 {
			return nil, fmt.Errorf("%s holds no .yaml, .yml or .json file", p)
		}
		sort.Strings(found)
		files = append(files, found...)
	}
	var b bytes.Buffer
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		b.WriteString("---\n")
		b.Write(data)
		if len(data) > 0 && data[len(data)-1] != '\n' {
			b.WriteByte('\n')
		}
	}
	return b.Bytes(), nil
}

// writePlatform stores each manifests release's stream as a file
// artifact (no target: the agent reads it from the bundle).
func writePlatform(ctx context.Context, st *state) error {
	for _, a := range st.platform {
		if a.stream == nil {
			continue
		}
		h, size, err := st.writer.WriteBytes(a.stream)
		if err != nil {
			return err
		}
		if _, _, err := st.writer.WriteBytes(bundle.EmptyJSON); err != nil {
			return err
		}
		_, version, _ := strings.Cut(strings.TrimPrefix(a.ref, "kpaas.local/manifests/"), ":")
		raw, err := bundle.FileManifest(v1.Descriptor{Digest: h, Size: size}, a.spec.Name+".yaml", version, "0644", "")
		if err != nil {
			return err
		}
		mh, msize, err := st.writer.WriteBytes(raw)
		if err != nil {
			return err
		}
		desc := v1.Descriptor{MediaType: "application/vnd.oci.image.manifest.v1+json", Digest: mh, Size: msize}
		st.entries = append(st.entries, entry{
			desc: bundle.Annotate(desc, bundle.KindFile, a.ref),
			lock: bundle.LockArtifact{
				Kind: bundle.KindFile, Ref: a.ref, Digest: mh.String(), MediaType: string(desc.MediaType),
				Source: "platform:" + a.spec.Name,
				File:   &bundle.LockedFile{Name: a.spec.Name + ".yaml", SHA256: h.Hex, Size: size, Mode: "0644"},
			},
		})
	}
	return nil
}

// lockPlatform is the lock's platform section: every source resolved to
// the reference of its artifact.
func (st *state) lockPlatform() *bundle.LockPlatform {
	p := st.manifest.Platform
	if p == nil {
		return nil
	}
	lp := &bundle.LockPlatform{Facts: p.Facts, Releases: []bundle.LockRelease{}}
	for _, s := range p.Secrets {
		lp.Secrets = append(lp.Secrets, bundle.LockSecret{Name: s.Name, Namespace: s.Namespace, Type: s.Type, Key: s.Key, Htpasswd: s.Htpasswd, Description: s.Description})
	}
	for _, a := range st.platform {
		r := a.spec
		lr := bundle.LockRelease{
			Name: r.Name, Namespace: r.Namespace, Manifests: a.ref, Values: r.Values, Substitute: r.Substitute,
			DependsOn: r.DependsOn, Timeout: r.Timeout, URL: r.URL, Vault: r.Vault, Harbor: r.Harbor, Images: a.images,
			Gate: bundle.LockGate{Skip: r.Gate.Skip},
		}
		for _, c := range r.Gate.Conditions {
			lr.Gate.Conditions = append(lr.Gate.Conditions, bundle.LockGateCondition(c))
		}
		if r.Chart != "" {
			for _, c := range st.charts {
				if c.spec.Release == r.Chart {
					lr.Chart = c.fetched.Ref
					for _, img := range c.images {
						lr.Images = append(lr.Images, img.Ref)
					}
				}
			}
		}
		lp.Releases = append(lp.Releases, lr)
	}
	return lp
}
