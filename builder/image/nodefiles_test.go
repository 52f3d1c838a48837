package image

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"kpaas.dev/appliance/builder/disk"
)

// nodeTestFiles: two files with targets (one in folders the OS image
// lacks), one without, and one with a target whose bytes the untargeted
// file shares (so KPAAS-BUNDLE keeps that blob).
var nodeTestFiles = []testFile{
	{name: "kubelet", version: "v1.35.4", mode: "0755", target: "/usr/local/bin/kubelet", data: strings.Repeat("\x7fELF kubelet ", 20_000)},
	{name: "modules-kubernetes", version: "1", mode: "0644", target: "/etc/modules-load.d/k8s.conf", data: "overlay\nbr_netfilter\n"},
	{name: "notes", version: "1", mode: "0644", data: "shared bytes\n"},
	{name: "shared", version: "1", mode: "0600", target: "/etc/kpaas/shared.conf", data: "shared bytes\n"},
}

// rawTable reads a raw image's partition table.
func rawTable(t *testing.T, raw string) sfdiskTable {
	t.Helper()
	var table sfdiskTable
	if err := json.Unmarshal([]byte(run(t, "sfdisk", "--json", raw)), &table); err != nil {
		t.Fatal(err)
	}
	return table
}

// listing runs unsquashfs -lln on a squashfs image and returns "mode
// uid/gid" by path (symlinks and device nodes are not told apart).
func listing(t *testing.T, img string) map[string]string {
	t.Helper()
	got := map[string]string{}
	for _, line := range strings.Split(run(t, "unsquashfs", "-lln", img), "\n") {
		f := strings.Fields(line)
		i := strings.Index(line, "squashfs-root/")
		if len(f) < 6 || i < 0 {
			continue
		}
		p, _, _ := strings.Cut(line[i+len("squashfs-root/"):], " -> ")
		got[p] = f[0] + " " + f[1]
	}
	return got
}

func TestNodeFiles(t *testing.T) {
	need(t, "sfdisk", "unsquashfs")
	fx := newFixture(t, fixtureOptions{files: nodeTestFiles})
	_, out := outDir(t)
	sum, err := Build(context.Background(), Options{Bundle: fx.dir, Out: out})
	if err != nil {
		t.Fatal(err)
	}
	var targets []string
	for _, f := range sum.NodeFiles {
		targets = append(targets, f.Mode+" "+f.Target)
	}
	if got := strings.Join(targets, ", "); got != "0755 /usr/local/bin/kubelet, 0644 /etc/modules-load.d/k8s.conf, 0600 /etc/kpaas/shared.conf" {
		t.Errorf("node files: %s", got)
	}
	if k := sum.NodeFiles[0]; k.Name != "kubelet" || k.Version != "v1.35.4" || k.Size != int64(len(nodeTestFiles[0].data)) ||
		k.Ref != nodeTestFiles[0].ref() || k.Digest != fx.files[0].String() {
		t.Errorf("kubelet: %+v", k)
	}
	if !slices.Equal(sum.NoTargetFiles, []string{nodeTestFiles[2].ref()}) {
		t.Errorf("files without a target: %v", sum.NoTargetFiles)
	}

	// root: the files at their targets, owned by root, with the build time
	raw := out + ".raw"
	table := rawTable(t, raw)
	root, _ := partition(t, raw, table, disk.NameRootA)
	ls := listing(t, root)
	for p, want := range map[string]string{
		"usr/local":                   "drwxr-xr-x 0/0",
		"usr/local/bin":               "drwxr-xr-x 0/0",
		"usr/local/bin/kubelet":       "-rwxr-xr-x 0/0",
		"etc/modules-load.d":          "drwxr-xr-x 0/0",
		"etc/modules-load.d/k8s.conf": "-rw-r--r-- 0/0",
		"etc/kpaas/shared.conf":       "-rw------- 0/0",
		"etc/os-release":              "-rw-r--r-- 0/0", // the image's files stay
		"usr/bin/kpaas-agent":         "-rwxr-xr-x 0/0",
	} {
		if ls[p] != want {
			t.Errorf("root %s: %q, want %q", p, ls[p], want)
		}
	}
	dir := filepath.Join(t.TempDir(), "root")
	run(t, "unsquashfs", "-no-xattrs", "-d", dir, root, "usr/local", "etc")
	for _, f := range nodeTestFiles {
		if f.target == "" {
			continue
		}
		p := filepath.Join(dir, f.target)
		b, err := os.ReadFile(p)
		if err != nil || string(b) != f.data {
			t.Errorf("%s: %d bytes (%v), want %d", f.target, len(b), err, len(f.data))
		}
		if fi, err := os.Stat(p); err != nil || !fi.ModTime().Equal(epoch) {
			t.Errorf("%s: mtime %v, want the build time %v", f.target, fi.ModTime(), epoch)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "notes")); err == nil {
		t.Error("the file without a target is in the root")
	}

	// bundle: the bytes of kubelet and k8s.conf are stored once, in the
	// root; the shared bytes stay (the untargeted file uses them)
	bundleBlobs := func(raw string) string {
		p, _ := partition(t, raw, rawTable(t, raw), disk.NameBundle)
		return run(t, "unsquashfs", "-l", p)
	}
	bl := bundleBlobs(raw)
	for i, h := range fx.files {
		if in, want := strings.Contains(bl, h.Hex), i >= 2; in != want {
			t.Errorf("KPAAS-BUNDLE holds %s (%s): %v, want %v", h, nodeTestFiles[i].name, in, want)
		}
	}
	if !slices.Contains(sum.BundleOmitted, fx.files[0].String()) || !slices.Contains(sum.BundleOmitted, fx.files[1].String()) ||
		slices.Contains(sum.BundleOmitted, fx.files[2].String()) || len(sum.BundleOmitted) != 4 {
		t.Errorf("omitted %v", sum.BundleOmitted)
	}

	// KeepOSLayers keeps them too
	_, out2 := outDir(t)
	sum2, err := Build(context.Background(), Options{Bundle: fx.dir, Out: out2, KeepOSLayers: true})
	if err != nil {
		t.Fatal(err)
	}
	bl = bundleBlobs(out2 + ".raw")
	for _, h := range append(fx.files, fx.layers...) {
		if !strings.Contains(bl, h.Hex) {
			t.Errorf("with KeepOSLayers, KPAAS-BUNDLE has no %s", h)
		}
	}
	if len(sum2.BundleOmitted) != 0 || len(sum2.NodeFiles) != 3 {
		t.Errorf("with KeepOSLayers: omitted %v, node files %d", sum2.BundleOmitted, len(sum2.NodeFiles))
	}
}

// TestNodeFilesBad: a bad target or mode names the artifact and leaves
// nothing behind.
func TestNodeFilesBad(t *testing.T) {
	file := func(target, mode string) testFile {
		return testFile{name: "bad", version: "v1", mode: mode, target: target, data: "x"}
	}
	cases := []struct {
		name string
		file testFile
		want string
	}{
		{"relative target", file("usr/bin/bad", "0755"), `target "usr/bin/bad"`},
		{"dot-dot", file("/usr/../etc/bad", "0755"), `target "/usr/../etc/bad"`},
		{"the root", file("/", "0755"), `target "/"`},
		{"replaces a folder", file("/usr/lib", "0755"), "would replace the folder /usr/lib"},
		{"below a file", file("/etc/os-release/bad", "0755"), "/etc/os-release is not a folder"},
		{"bad mode", file("/usr/bin/bad", "rwx"), `mode "rwx"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fx := newFixture(t, fixtureOptions{files: []testFile{kubeadmFile, c.file}})
			dir, out := outDir(t)
			_, err := Build(context.Background(), Options{Bundle: fx.dir, Out: out, Formats: []disk.Format{disk.Raw, disk.QCOW2}})
			if err == nil {
				t.Fatal("no error")
			}
			t.Log(err)
			for _, want := range []string{"files: file kpaas.local/files/bad:v1: ", c.want} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q, want %q in it", err, want)
				}
			}
			if got := listDir(t, dir); got != "" {
				t.Errorf("left behind: %s", got)
			}
		})
	}

	t.Run("one target twice", func(t *testing.T) {
		twice := kubeadmFile
		twice.name = "kubeadm-too"
		fx := newFixture(t, fixtureOptions{files: []testFile{kubeadmFile, twice}})
		_, out := outDir(t)
		_, err := Build(context.Background(), Options{Bundle: fx.dir, Out: out})
		if err == nil || !strings.Contains(err.Error(), ": target /usr/bin/kubeadm is also the target of ") ||
			!strings.Contains(err.Error(), twice.ref()) || !strings.Contains(err.Error(), kubeadmFile.ref()) {
			t.Errorf("error %v", err)
		}
	})
}

// TestNodeFilesCorrupt: a file blob that does not match its digest fails
// the build, naming the artifact and the blob: at verify, and in the files
// step when the blob changes after verify.
func TestNodeFilesCorrupt(t *testing.T) {
	corrupt := func(fx *fixture) {
		p := filepath.Join(fx.dir, "blobs", "sha256", fx.files[0].Hex)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 0xff
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("build", func(t *testing.T) {
		fx := newFixture(t, fixtureOptions{files: nodeTestFiles[:2]})
		corrupt(fx)
		dir, out := outDir(t)
		_, err := Build(context.Background(), Options{Bundle: fx.dir, Out: out})
		t.Log(err)
		if err == nil || !strings.Contains(err.Error(), nodeTestFiles[0].ref()) || !strings.Contains(err.Error(), fx.files[0].Hex) {
			t.Errorf("error %v", err)
		}
		if got := listDir(t, dir); got != "" {
			t.Errorf("left behind: %s", got)
		}
	})

	t.Run("after verify", func(t *testing.T) {
		fx := newFixture(t, fixtureOptions{files: nodeTestFiles[:2]})
		_, out := outDir(t)
		b := &build{o: Options{Bundle: fx.dir, Out: out}, work: t.TempDir(), sum: &Summary{}}
		defer b.cleanup()
		ctx := context.Background()
		for _, step := range []func(context.Context) error{b.verify, b.findOS, b.readLayers} {
			if err := step(ctx); err != nil {
				t.Fatal(err)
			}
		}
		corrupt(fx)
		err := b.nodeFiles(ctx)
		t.Log(err)
		if err == nil || !strings.Contains(err.Error(), "file "+nodeTestFiles[0].ref()+": ") || !strings.Contains(err.Error(), "blob "+fx.files[0].String()) {
			t.Errorf("error %v", err)
		}
	})
}
