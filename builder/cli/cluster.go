package cli

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"kpaas.dev/appliance/api/cluster/v1alpha1"
	"kpaas.dev/appliance/builder/disk"
	"kpaas.dev/appliance/internal/atomicfile"
	"kpaas.dev/appliance/internal/clustersecrets"
	"kpaas.dev/appliance/internal/names"
)

func newClusterCmd(s *streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Write a site's cluster configuration and secrets, lint it, make config disks",
	}
	cmd.AddCommand(
		newClusterInitCmd(s),
		newClusterLintCmd(s),
		newClusterConfigDiskCmd(s),
		newClusterSecretsCmd(s),
	)
	return cmd
}

// writtenFile is one file a cluster command wrote: its path and mode,
// never its content.
type writtenFile struct {
	Path string `json:"path"`
	Mode string `json:"mode"`
}

// clusterInitResult is the output of `kpaas cluster init --json`.
type clusterInitResult struct {
	Dir     string        `json:"dir"`
	Cluster string        `json:"cluster"`
	Nodes   int           `json:"nodes"`
	CAHash  string        `json:"caHash"` // not a secret: kubeadm's pin of the CA's public key
	Files   []writtenFile `json:"files"`
}

type clusterInitOptions struct {
	out, from, name, endpoint string
	nodes                     []string
	force, rotateToken        bool
	asJSON                    bool
	bundle                    string
}

func newClusterInitCmd(s *streams) *cobra.Command {
	var o clusterInitOptions
	cmd := &cobra.Command{
		Use:   "init -o DIR (--name NAME --endpoint HOST[:PORT] --node NAME=ROLE,MAC,ADDR/PREFIX[,gw=IP] … | --from FILE)",
		Short: "Write a cluster configuration and fresh secrets (CAs, keys, bootstrap token, admin kubeconfig)",
		Long: `Init writes DIR/cluster.yaml and DIR/secrets/ for one site (docs/cluster.md).

The configuration comes from flags, or with --from from an existing
cluster.yaml (copied as it is, comments kept). It is defaulted and validated
before anything is written. Each --node is

  NAME=ROLE,MAC,ADDR/PREFIX[,gw=IP][,dns=IP]…[,ntp=HOST]…

with ROLE control-plane or worker; MAC may be empty (the node then finds its
entry by hostname or the kpaas.node= kernel argument).

The secrets are the cluster, front-proxy and etcd CAs, the service-account
key pair, a bootstrap token and the operator's admin.conf; folders 0700,
files 0600. Init refuses to replace existing secrets unless --force is given
(new CAs cut off every node that trusts the old ones). --rotate-token
replaces only the token; rewrite the config disks afterwards.

Init prints the files it wrote and their modes, never their content.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runClusterInit(s, o) },
	}
	f := cmd.Flags()
	f.StringVarP(&o.out, "output", "o", "", "folder to write cluster.yaml and secrets/ into")
	f.StringVar(&o.from, "from", "", "take the configuration from this cluster.yaml instead of the flags")
	f.StringVar(&o.name, "name", "", "the cluster's name (a DNS label)")
	f.StringVar(&o.endpoint, "endpoint", "", "the API server endpoint HOST[:PORT] (port 6443 by default)")
	f.StringArrayVar(&o.nodes, "node", nil, "a node NAME=ROLE,MAC,ADDR/PREFIX[,gw=IP][,dns=IP][,ntp=HOST] (repeat)")
	f.BoolVar(&o.force, "force", false, "replace existing secrets with new ones")
	f.BoolVar(&o.rotateToken, "rotate-token", false, "replace only the bootstrap token of existing secrets")
	f.BoolVar(&o.asJSON, "json", false, "print the result as JSON")
	f.StringVar(&o.bundle, "bundle", "", "also generate the per-cluster secrets this bundle manifest's platform declares")
	_ = cmd.MarkFlagRequired("output")
	return cmd
}

func runClusterInit(s *streams, o clusterInitOptions) error {
	var c *v1alpha1.Cluster
	var data []byte
	switch {
	case o.from != "" && (o.name != "" || o.endpoint != "" || len(o.nodes) > 0):
		return errors.New("--from takes the whole configuration from the file: leave out --name, --endpoint and --node")
	case o.from != "":
		var err error
		if data, err = os.ReadFile(o.from); err != nil {
			return fmt.Errorf("reading cluster configuration: %w", err)
		}
		if c, err = v1alpha1.Parse(o.from, data); err != nil {
			return err
		}
	case o.rotateToken:
		return errors.New("--rotate-token needs --from FILE")
	default:
		var err error
		if c, err = clusterFromFlags(o.name, o.endpoint, o.nodes); err != nil {
			return err
		}
		data = renderCluster(c)
		// What is written must read back as the same configuration.
		if back, err := v1alpha1.Parse(v1alpha1.ClusterFile, data); err != nil || !reflect.DeepEqual(back, c) {
			return fmt.Errorf("internal error: the configuration written does not read back the same (%v)", err)
		}
	}
	if o.rotateToken && o.force {
		return errors.New("--rotate-token keeps the other secrets: leave out --force")
	}
	if existing := clustersecrets.Existing(o.out); len(existing) > 0 && !o.force && !o.rotateToken {
		return fmt.Errorf("%s holds secrets already (%s): pass --force to replace them all, or --rotate-token to replace the token",
			filepath.Join(o.out, v1alpha1.SecretsDir), strings.Join(existing, ", "))
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	res := clusterInitResult{Dir: o.out, Cluster: c.Metadata.Name, Nodes: len(c.Nodes)}
	clusterFile := filepath.Join(o.out, v1alpha1.ClusterFile)
	if !sameFile(o.from, clusterFile) {
		if err := atomicfile.WriteFile(clusterFile, data, 0o644); err != nil {
			return fmt.Errorf("writing %s: %w", clusterFile, err)
		}
		res.Files = append(res.Files, writtenFile{clusterFile, "0644"})
	}
	names := clustersecrets.Names
	if o.rotateToken {
		if err := clustersecrets.RotateToken(o.out); err != nil {
			return err
		}
		names = []string{v1alpha1.Token}
	} else {
		var opts []clustersecrets.Option
		if o.force {
			opts = append(opts, clustersecrets.WithOverwrite())
		}
		if err := clustersecrets.Generate(o.out, c, time.Now(), opts...); err != nil {
			return err
		}
	}
	if o.bundle != "" {
		made, err := generatePlatformSecrets(o.out, o.bundle)
		if err != nil {
			return err
		}
		for _, m := range made {
			names = append(names, clustersecrets.PlatformDir+"/"+m)
		}
	}
	for _, n := range names {
		p := filepath.Join(o.out, v1alpha1.SecretsDir, filepath.FromSlash(n))
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		res.Files = append(res.Files, writtenFile{p, fmt.Sprintf("%04o", fi.Mode().Perm())})
	}
	ca, err := os.ReadFile(filepath.Join(o.out, v1alpha1.SecretsDir, v1alpha1.CACert))
	if err != nil {
		return err
	}
	if res.CAHash, err = clustersecrets.CAHash(ca); err != nil {
		return err
	}
	if o.asJSON {
		return writeJSON(s.out, res)
	}
	for _, f := range res.Files {
		fmt.Fprintf(s.out, "wrote %s (%s)\n", f.Path, f.Mode)
	}
	what := "secrets"
	if o.rotateToken {
		what = "a new bootstrap token"
	}
	fmt.Fprintf(s.out, "cluster %s: %d nodes, %s in %s; CA hash %s\n", res.Cluster, res.Nodes, what, filepath.Join(o.out, v1alpha1.SecretsDir), res.CAHash)
	return nil
}

// sameFile tells whether a and b name one existing file.
func sameFile(a, b string) bool {
	if a == "" {
		return false
	}
	fa, err1 := os.Stat(a)
	fb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(fa, fb)
}

// clusterFromFlags builds, defaults and validates a configuration from
// init's flags.
func clusterFromFlags(name, endpoint string, nodes []string) (*v1alpha1.Cluster, error) {
	if name == "" || endpoint == "" || len(nodes) == 0 {
		return nil, errors.New("give --name, --endpoint and at least one --node, or --from FILE")
	}
	c := &v1alpha1.Cluster{APIVersion: v1alpha1.APIVersion, Kind: v1alpha1.Kind, Metadata: v1alpha1.Metadata{Name: name}}
	host, port := endpoint, ""
	if h, p, err := net.SplitHostPort(endpoint); err == nil {
		host, port = h, p
	}
	c.ControlPlaneEndpoint.Host = host
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil {
			return nil, fmt.Errorf("--endpoint %q: port %q is not a number", endpoint, port)
		}
		c.ControlPlaneEndpoint.Port = n
	}
	for _, spec := range nodes {
		n, err := parseNodeFlag(spec)
		if err != nil {
			return nil, err
		}
		c.Nodes = append(c.Nodes, n)
	}
	c.Default()
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("invalid cluster configuration:\n%w", err)
	}
	return c, nil
}

// parseNodeFlag reads NAME=ROLE,MAC,ADDR/PREFIX[,gw=IP][,dns=IP]…[,ntp=HOST]….
func parseNodeFlag(spec string) (v1alpha1.Node, error) {
	bad := func(why string) (v1alpha1.Node, error) {
		return v1alpha1.Node{}, fmt.Errorf("--node %q: %s (want NAME=ROLE,MAC,ADDR/PREFIX[,gw=IP][,dns=IP][,ntp=HOST])", spec, why)
	}
	name, rest, ok := strings.Cut(spec, "=")
	if !ok || name == "" {
		return bad("no NAME=")
	}
	parts := strings.Split(rest, ",")
	if len(parts) < 3 {
		return bad("ROLE, MAC and ADDR/PREFIX are required")
	}
	n := v1alpha1.Node{Name: name, Role: parts[0], Address: parts[2]}
	if parts[1] != "" {
		n.MACs = []string{parts[1]}
	}
	for _, kv := range parts[3:] {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "gw":
			n.Gateway = v
		case "dns":
			n.DNS = append(n.DNS, v)
		case "ntp":
			n.NTP = append(n.NTP, v)
		default:
			return bad(fmt.Sprintf("unknown option %q", kv))
		}
	}
	return n, nil
}

func newClusterLintCmd(s *streams) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "lint FILE...",
		Short: "Check cluster configurations",
		Long: `Lint parses each cluster configuration strictly and checks every rule of
the schema (see docs/cluster.md). It reads only the files given: secrets are
not looked at.

Each problem is printed as FILE:LINE:COLUMN: PATH: MESSAGE. Lint exits non-zero
when any file has a problem.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, files []string) error {
			return lintFiles(s, files, asJSON, lintCluster, "cluster configurations")
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the results as a JSON array")
	return cmd
}

// lintCluster loads one configuration, as lint does a manifest.
func lintCluster(file string) lintResult {
	r := lintResult{File: file, Problems: []v1alpha1.Problem{}}
	c, err := v1alpha1.ParseFile(file)
	var verr *v1alpha1.ValidationError
	switch {
	case err == nil:
		r.OK = true
		cps := 0
		for _, n := range c.Nodes {
			if n.Role == v1alpha1.RoleControlPlane {
				cps++
			}
		}
		r.summary = fmt.Sprintf("ok (cluster %s: %d control-plane, %d worker nodes; endpoint %s)", c.Metadata.Name, cps, len(c.Nodes)-cps, c.ControlPlaneEndpoint)
	case errors.As(err, &verr):
		r.Problems = verr.Problems
	default:
		r.Problems = []v1alpha1.Problem{{Message: err.Error()}}
	}
	return r
}

// ConfigLabel is the FAT label of a config disk. The agent finds the disk
// by its GPT partition name, names.PartConfig ("KPAAS-CONFIG"), which
// is one character too long for a FAT label.
const ConfigLabel = "KPAASCONFIG"

// configDiskResult is the output of `kpaas cluster config-disk --json`.
type configDiskResult struct {
	Node  string        `json:"node"`
	Role  string        `json:"role"`
	Image *disk.Summary `json:"image"`
}

func newClusterConfigDiskCmd(s *streams) *cobra.Command {
	var node, out string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "config-disk DIR --node NAME -o FILE.img",
		Short: "Write a node's config disk: cluster.yaml and the secrets its role needs",
		Long: `Config-disk writes a small disk image for one node from the folder
` + "`kpaas cluster init`" + ` wrote: a GPT disk with one FAT partition named
KPAAS-CONFIG (FAT label KPAASCONFIG) that holds

  cluster.yaml
  secrets/…    a control plane: the CAs, the service-account keys, the token
               a worker: secrets/pki/ca.crt and secrets/token only

Attach it to the node (a virtual disk, or dd it onto a USB stick); kpaas-init
mounts it read-only at /run/kpaas/config, where it wins over the media's
ESP copy of cluster.yaml. admin.conf never goes on a config disk. The image
is written 0600 as an ordinary user (no root, loop devices or mounts) and is
byte-reproducible with SOURCE_DATE_EPOCH set.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			res, err := writeConfigDisk(cmd, args[0], node, out)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(s.out, res)
			}
			var paths []string
			for _, f := range res.Image.Files {
				paths = append(paths, strings.TrimPrefix(f.Path, "/"))
			}
			fmt.Fprintf(s.out, "wrote %s (0600, %d MiB, partition %s, label %s) for node %s (%s): %s\n",
				res.Image.Path, res.Image.Size>>20, names.PartConfig, ConfigLabel, res.Node, res.Role, strings.Join(paths, ", "))
			return nil
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "the node's name in cluster.yaml")
	cmd.Flags().StringVarP(&out, "output", "o", "", "the image file to write")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	_ = cmd.MarkFlagRequired("node")
	_ = cmd.MarkFlagRequired("output")
	return cmd
}

func writeConfigDisk(cmd *cobra.Command, dir, nodeName, out string) (*configDiskResult, error) {
	clusterFile := filepath.Join(dir, v1alpha1.ClusterFile)
	c, err := v1alpha1.ParseFile(clusterFile)
	if err != nil {
		return nil, err
	}
	var node *v1alpha1.Node
	var nodes []string
	for i := range c.Nodes {
		nodes = append(nodes, c.Nodes[i].Name)
		if c.Nodes[i].Name == nodeName {
			node = &c.Nodes[i]
		}
	}
	if node == nil {
		return nil, fmt.Errorf("%s has no node %q (nodes: %s): add it first", clusterFile, nodeName, strings.Join(nodes, ", "))
	}
	secrets, err := clustersecrets.Load(dir)
	if err != nil {
		return nil, err
	}
	files := map[string]disk.Source{"/" + v1alpha1.ClusterFile: disk.FromFile(clusterFile)}
	for _, name := range clustersecrets.ForRole(node.Role) {
		b, err := secrets.Get(name)
		if err != nil {
			return nil, fmt.Errorf("%w (in %s)", err, dir)
		}
		files["/"+v1alpha1.SecretsDir+"/"+name] = disk.FromBytes(b)
	}
	// The platform's secrets go to the first control plane alone: its
	// agent installs the platform.
	if fcp := c.FirstControlPlane(); fcp != nil && fcp.Name == node.Name {
		ps, err := clustersecrets.PlatformNames(dir)
		if err != nil {
			return nil, err
		}
		for _, p := range ps {
			b, err := clustersecrets.ReadPlatform(dir, strings.TrimPrefix(p, clustersecrets.PlatformDir+"/"))
			if err != nil {
				return nil, err
			}
			files["/"+v1alpha1.SecretsDir+"/"+p] = disk.FromBytes(b)
		}
	}
	var opts []disk.Option
	if epoch, ok, err := sourceDateEpoch(); err != nil {
		return nil, err
	} else if ok {
		opts = append(opts, disk.WithTime(epoch))
	}
	sum, err := disk.WriteFATDisk(cmd.Context(), out, names.PartConfig, ConfigLabel, files, opts...)
	if err != nil {
		return nil, err
	}
	return &configDiskResult{Node: node.Name, Role: node.Role, Image: sum}, nil
}
