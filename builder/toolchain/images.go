package toolchain

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// RefNameAnnotation carries an image's full reference in an OCI layout index.
const RefNameAnnotation = "org.opencontainers.image.ref.name"

// Kubeadm's defaults for v1.35 (`kubeadm config images list`) name etcd
// 3.6.6-0 and CoreDNS v1.13.1, which are not on the module proxy. The images
// carry their true version and, as an alias pointing at the same manifest,
// the name kubeadm pulls by default. Prefer setting etcd.local.imageTag and
// dns.imageTag in the ClusterConfiguration to the true tags.
const (
	KubeadmEtcdTag    = "3.6.6-0"
	KubeadmCoreDNSTag = "v1.13.1"
)

// An imageSpec is one image assembled from built binaries.
type imageSpec struct {
	Ref     string   // full reference, true version
	Aliases []string // further references to the same manifest
	Version string   // org.opencontainers.image.version
	Files   []imageFile
	// TarLayers are component outputs that are uncompressed tars, added as
	// layers below Files (the Debian netfilter tools).
	TarLayers  []imageFile
	Entrypoint []string
	User       string

	// What Harbor's images add (unset for the Kubernetes images, whose
	// bytes must not change).
	Cmd        []string `json:",omitempty"`
	Env        []string `json:",omitempty"` // after PATH; a PATH= entry replaces it
	WorkingDir string   `json:",omitempty"` // default "/"
	// Users and Dirs go into the top layer: /etc/passwd and /etc/group
	// with the base users plus these, and folders with an owner.
	Users []imageUser `json:",omitempty"`
	Dirs  []imageDir  `json:",omitempty"`
	// Extract copies files or folders out of a tar output of a component
	// (Harbor's support files) into the top layer.
	Extract []imageExtract `json:",omitempty"`
	// Texts are small files written as given.
	Texts []imageText `json:",omitempty"`
	// Labels go into the image config and, with the version, into the
	// layout's index annotations (source, revision).
	Labels map[string]string `json:",omitempty"`
}

type imageUser struct {
	Name     string
	UID, GID int
	Home     string
}

type imageDir struct {
	Path     string
	Mode     int64
	UID, GID int
}

type imageExtract struct {
	Component, Tar string
	Src            string // a file or folder path inside the tar
	Dest           string // where Src lands in the image
	Mode           int64  // file mode; 0 keeps the tar's
}

type imageText struct {
	Path string
	Mode int64
	Data string
}

type imageFile struct {
	Component, Name string // source: a component output
	Dest            string // absolute path in the image
}

// ImageResult is one assembled image.
type ImageResult struct {
	Ref     string
	Aliases []string `json:",omitempty"`
	Digest  string
	Size    int64 // sum of manifest, config and layer sizes
}

// imageSpecs is the literal list of images: everything kubeadm runs as a
// container, plus the pod network.
func imageSpecs(portal bool) []imageSpec {
	const reg = "registry.k8s.io/"
	var specs []imageSpec
	netTools := []imageFile{{"nettools", NetToolsTar, ""}}
	for _, c := range []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy"} {
		s := imageSpec{
			Ref: reg + c + ":" + KubernetesVersion, Version: KubernetesVersion,
			Files:      []imageFile{{"kube", c, "/usr/local/bin/" + c}},
			Entrypoint: []string{"/usr/local/bin/" + c},
		}
		if c == "kube-proxy" { // execs iptables-restore, conntrack
			s.TarLayers = netTools
		}
		specs = append(specs, s)
	}
	etcdTag := EtcdVersion[1:] + "-0"
	specs = append(specs,
		imageSpec{
			Ref: reg + "etcd:" + etcdTag, Aliases: []string{reg + "etcd:" + KubeadmEtcdTag}, Version: EtcdVersion,
			Files: []imageFile{
				{"etcd", "etcd", "/usr/local/bin/etcd"},
				{"etcd", "etcdctl", "/usr/local/bin/etcdctl"},
				{"etcd", "etcdutl", "/usr/local/bin/etcdutl"},
			},
			Entrypoint: []string{"/usr/local/bin/etcd"},
		},
		imageSpec{
			Ref: reg + "coredns/coredns:" + CoreDNSVersion, Aliases: []string{reg + "coredns/coredns:" + KubeadmCoreDNSTag},
			Version: CoreDNSVersion, Files: []imageFile{{"coredns", "coredns", "/coredns"}},
			Entrypoint: []string{"/coredns"},
		},
		imageSpec{
			Ref: reg + "pause:" + PauseVersion, Version: PauseVersion,
			Files: []imageFile{{"pause", "pause", "/pause"}}, Entrypoint: []string{"/pause"},
			User: "65535:65535",
		},
		imageSpec{
			Ref: "docker.io/cloudnativelabs/kube-router:" + KubeRouterVersion, Version: KubeRouterVersion,
			Files:      []imageFile{{"kube-router", "kube-router", "/usr/local/bin/kube-router"}},
			TarLayers:  netTools, // execs iptables, ipset
			Entrypoint: []string{"/usr/local/bin/kube-router"},
		},
	)
	return slices.Concat(specs, harborImageSpecs(portal), platformImageSpecs())
}

const imagesList = "images.json"

// imagesEntry is the cache folder of the images made of dirs' binaries,
// keyed by the specs, the timestamp and the digests of the input binaries.
func (b *builder) imagesEntry(dirs map[string]string) (string, error) {
	specs := imageSpecs(b.opts.HarborPortal)
	h := sha256.New()
	fmt.Fprintf(h, "recipe %s\nepoch %d\n", recipeRevision, b.opts.SourceDateEpoch.Unix())
	specJSON, _ := json.Marshal(specs)
	h.Write(specJSON)
	for _, s := range specs {
		files := slices.Concat(s.TarLayers, s.Files)
		for _, x := range s.Extract {
			files = append(files, imageFile{Component: x.Component, Name: x.Tar})
		}
		for _, f := range files {
			m, err := readManifest(dirs[f.Component])
			if err != nil {
				return "", err
			}
			fmt.Fprintf(h, "%s %s\n", f.Name, m.Files[f.Name].SHA256)
		}
	}
	key := "images-" + KubernetesVersion + "-" + b.goVersion + "-" + hex.EncodeToString(h.Sum(nil))[:12]
	return filepath.Join(b.opts.CacheDir, key), nil
}

// cachedImages is what a complete images entry holds.
func cachedImages(dir string) ([]ImageResult, bool) {
	data, err := os.ReadFile(filepath.Join(dir, imagesList))
	if err != nil {
		return nil, false
	}
	var res []ImageResult
	if err := json.Unmarshal(data, &res); err != nil {
		return nil, false
	}
	return res, true
}

// images assembles every image into one OCI layout in the cache
// (imagesEntry), unless a complete entry already exists.
func (b *builder) images(ctx context.Context, dirs map[string]string) (string, []ImageResult, bool, error) {
	specs := imageSpecs(b.opts.HarborPortal)
	dir, err := b.imagesEntry(dirs)
	if err != nil {
		return "", nil, false, err
	}
	if res, ok := cachedImages(dir); ok {
		return dir, res, true, nil
	}
	key := filepath.Base(dir)

	tmp, err := os.MkdirTemp(b.opts.CacheDir, ".tmp-"+key+"-")
	if err != nil {
		return "", nil, false, err
	}
	defer os.RemoveAll(tmp)
	p, err := layout.Write(tmp, empty.Index)
	if err != nil {
		return "", nil, false, err
	}
	base, err := baseLayer(b.opts.SourceDateEpoch)
	if err != nil {
		return "", nil, false, err
	}
	var res []ImageResult
	for _, s := range specs {
		if err := ctx.Err(); err != nil {
			return "", nil, false, err
		}
		img, err := buildImage(s, base, dirs, b.opts.SourceDateEpoch)
		if err != nil {
			return "", nil, false, fmt.Errorf("image %s: %w", s.Ref, err)
		}
		for _, ref := range append([]string{s.Ref}, s.Aliases...) {
			ann := map[string]string{
				RefNameAnnotation:                  ref,
				"org.opencontainers.image.version": s.Version,
			}
			for k, v := range s.Labels {
				ann[k] = v
			}
			if err := p.AppendImage(img, layout.WithAnnotations(ann)); err != nil {
				return "", nil, false, fmt.Errorf("writing image %s: %w", ref, err)
			}
		}
		r, err := describe(s, img)
		if err != nil {
			return "", nil, false, err
		}
		res = append(res, r)
	}
	data, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return "", nil, false, err
	}
	if err := os.WriteFile(filepath.Join(tmp, imagesList), append(data, '\n'), 0o644); err != nil {
		return "", nil, false, err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", nil, false, err
	}
	os.RemoveAll(dir)
	if err := os.Rename(tmp, dir); err != nil {
		return "", nil, false, err
	}
	return dir, res, false, nil
}

func describe(s imageSpec, img v1.Image) (ImageResult, error) {
	d, err := img.Digest()
	if err != nil {
		return ImageResult{}, err
	}
	m, err := img.Manifest()
	if err != nil {
		return ImageResult{}, err
	}
	raw, err := img.RawManifest()
	if err != nil {
		return ImageResult{}, err
	}
	size := int64(len(raw)) + m.Config.Size
	for _, l := range m.Layers {
		size += l.Size
	}
	return ImageResult{Ref: s.Ref, Aliases: s.Aliases, Digest: d.String(), Size: size}, nil
}

// buildImage assembles one image: the shared base layer and one layer with
// the spec's binaries, OCI media types, and the fixed timestamp everywhere.
func buildImage(s imageSpec, base v1.Layer, dirs map[string]string, epoch time.Time) (v1.Image, error) {
	var files []tarEntry
	for _, f := range s.Files {
		files = append(files, tarEntry{Name: f.Dest, Mode: 0o755, Src: filepath.Join(dirs[f.Component], f.Name)})
	}
	extra, err := s.topFiles(dirs)
	if err != nil {
		return nil, err
	}
	bin, err := tarLayer(withParents(append(extra, files...)), epoch)
	if err != nil {
		return nil, err
	}
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	for _, e := range s.Env {
		if strings.HasPrefix(e, "PATH=") {
			env[0] = e
		} else {
			env = append(env, e)
		}
	}
	wd := s.WorkingDir
	if wd == "" {
		wd = "/"
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.ConfigFile(img, &v1.ConfigFile{
		Architecture: "amd64",
		OS:           "linux",
		Config: v1.Config{
			Entrypoint: s.Entrypoint,
			Cmd:        s.Cmd,
			Env:        env,
			User:       s.User,
			WorkingDir: wd,
			Labels:     s.Labels,
		},
		RootFS: v1.RootFS{Type: "layers"},
	})
	if err != nil {
		return nil, err
	}
	created := v1.Time{Time: epoch}
	adds := []mutate.Addendum{{Layer: base, History: v1.History{Created: created, CreatedBy: "kpaas toolchain: base files"}}}
	for _, tl := range s.TarLayers {
		src := filepath.Join(dirs[tl.Component], tl.Name)
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return os.Open(src) },
			tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
		if err != nil {
			return nil, err
		}
		adds = append(adds, mutate.Addendum{Layer: l, History: v1.History{Created: created, CreatedBy: "kpaas toolchain: " + tl.Component + "/" + tl.Name}})
	}
	adds = append(adds, mutate.Addendum{Layer: bin, History: v1.History{Created: created, CreatedBy: "kpaas toolchain: " + s.Ref}})
	img, err = mutate.Append(img, adds...)
	if err != nil {
		return nil, err
	}
	return mutate.CreatedAt(img, created)
}

// tarEntry is one file or folder of a layer; Src empty means Data (or a folder
// when Dir is set).
type tarEntry struct {
	Name     string
	Mode     int64
	Dir      bool
	Link     string // a symbolic link to Link
	Data     []byte
	Src      string
	UID, GID int
}

// withParents prepends the folders above every entry (root-owned, 0755),
// so the layer does not rely on the runtime creating them.
func withParents(files []tarEntry) []tarEntry {
	seen := map[string]bool{}
	var out []tarEntry
	for _, f := range files {
		var parents []string
		for d := path.Dir(f.Name); d != "/" && !seen[d]; d = path.Dir(d) {
			seen[d] = true
			parents = append([]string{d}, parents...)
		}
		for _, d := range parents {
			out = append(out, tarEntry{Name: d, Mode: 0o755, Dir: true})
		}
		if f.Dir { // an explicit folder (with its owner) is its own parent
			seen[f.Name] = true
		}
		out = append(out, f)
	}
	return out
}

// baseLayer holds what a static binary expects of a root filesystem: users,
// groups, name service switch, /tmp. It is shared by every image.
func baseLayer(epoch time.Time) (v1.Layer, error) {
	passwd := "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
	group := "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n"
	return tarLayer([]tarEntry{
		{Name: "/etc", Mode: 0o755, Dir: true},
		{Name: "/etc/group", Mode: 0o644, Data: []byte(group)},
		{Name: "/etc/nsswitch.conf", Mode: 0o644, Data: []byte("hosts: files dns\n")},
		{Name: "/etc/passwd", Mode: 0o644, Data: []byte(passwd)},
		{Name: "/home", Mode: 0o755, Dir: true},
		{Name: "/home/nonroot", Mode: 0o700, Dir: true},
		{Name: "/root", Mode: 0o700, Dir: true},
		{Name: "/tmp", Mode: 0o1777, Dir: true},
		{Name: "/var", Mode: 0o755, Dir: true},
		{Name: "/var/run", Mode: 0o755, Dir: true},
	}, epoch)
}

// tarLayer is a gzip-compressed OCI layer of entries, written in the given
// order with owner 0:0 and the fixed mtime. The uncompressed tar is produced
// on demand, and the compressed bytes are kept after the first pass so
// digesting and writing do not compress twice.
func tarLayer(entries []tarEntry, mtime time.Time) (v1.Layer, error) {
	opener := func() (io.ReadCloser, error) {
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(writeTar(pw, entries, mtime)) }()
		return pr, nil
	}
	return tarball.LayerFromOpener(opener, tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
}

func writeTar(w io.Writer, entries []tarEntry, mtime time.Time) error {
	tw := tar.NewWriter(w)
	for _, e := range entries {
		name := e.Name[1:] // layer paths are relative
		switch {
		case e.Dir:
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: e.Mode, ModTime: mtime, Uid: e.UID, Gid: e.GID}); err != nil {
				return err
			}
		case e.Link != "":
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: e.Link, Mode: 0o777, ModTime: mtime}); err != nil {
				return err
			}
		case e.Src != "":
			if err := addFile(tw, e.Src, name, e.Mode, mtime); err != nil {
				return err
			}
		default:
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: e.Mode, Size: int64(len(e.Data)), ModTime: mtime, Uid: e.UID, Gid: e.GID}); err != nil {
				return err
			}
			if _, err := io.Copy(tw, bytes.NewReader(e.Data)); err != nil {
				return err
			}
		}
	}
	return tw.Close()
}

// ImageRefs are the references of every image Build assembles by default
// (aliases included; not Harbor's optional portal), in build order.
func ImageRefs() []string {
	var refs []string
	for _, s := range imageSpecs(false) {
		refs = append(refs, s.Ref)
		refs = append(refs, s.Aliases...)
	}
	return refs
}
