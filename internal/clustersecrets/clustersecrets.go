// Package clustersecrets makes, reads and hands out a cluster's secrets:
// the three certificate authorities kubeadm wants (cluster, front-proxy,
// etcd), the service-account key pair, the bootstrap token and the
// operator's admin kubeconfig. `kpaas cluster init` calls Generate on the
// operator's machine; `kpaas cluster config-disk` copies ForRole's subset
// onto a node's config disk; kpaas-agent calls Load on the mounted disk.
//
// The files live under DIR/secrets (v1alpha1.SecretsDir) with the names
// v1alpha1 declares, in kubeadm's PKI layout: folders 0700, files 0600,
// every write atomic. The package does no network I/O and logs nothing:
// secret bytes leave it only as return values.
package clustersecrets

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"kpaas.dev/appliance/api/cluster/v1alpha1"
)

// Names lists every secret file, relative to the secrets folder, in the
// order Generate writes them.
var Names = []string{
	v1alpha1.CACert, v1alpha1.CAKey,
	v1alpha1.FrontProxyCACert, v1alpha1.FrontProxyCAKey,
	v1alpha1.EtcdCACert, v1alpha1.EtcdCAKey,
	v1alpha1.SAKey, v1alpha1.SAPub,
	v1alpha1.Token,
	v1alpha1.AdminKubeconfig,
}

// ForRole returns the secret files a node of role gets on its config disk:
// a control plane every one but the operator's admin.conf (it runs kubeadm
// with the CAs and the service-account keys), a worker only the cluster
// CA's certificate and the bootstrap token (what kubeadm join needs to
// trust the API server and be trusted by it). No private key ever reaches
// a worker. An unknown role gets nothing.
func ForRole(role string) []string {
	switch role {
	case v1alpha1.RoleControlPlane:
		return slices.DeleteFunc(slices.Clone(Names), func(n string) bool { return n == v1alpha1.AdminKubeconfig })
	case v1alpha1.RoleWorker:
		return []string{v1alpha1.CACert, v1alpha1.Token}
	}
	return nil
}

// Secrets are secret files by name (v1alpha1.CACert, …): all of Names in a
// folder Generate wrote, the role's subset on a config disk.
type Secrets map[string][]byte

// Load reads the secret files present under dir/secrets (dir is the
// folder `kpaas cluster init` wrote, or a mounted config disk). Files
// missing are left out (a worker's disk carries two); a secrets folder
// missing is an error. Every file and folder must be closed to group and
// others: the error names the first that is not, and its mode.
func Load(dir string) (Secrets, error) {
	root := filepath.Join(dir, v1alpha1.SecretsDir)
	if err := checkPrivate(root); err != nil {
		return nil, err
	}
	s := Secrets{}
	for _, name := range Names {
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := checkPrivate(filepath.Dir(p)); errors.Is(err, fs.ErrNotExist) {
			continue
		} else if err != nil {
			return nil, err
		}
		if err := checkPrivate(p); errors.Is(err, fs.ErrNotExist) {
			continue
		} else if err != nil {
			return nil, err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("reading secret: %w", err)
		}
		s[name] = b
	}
	return s, nil
}

// checkPrivate fails when path is accessible to group or others.
func checkPrivate(path string) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	if !fi.IsDir() && !fi.Mode().IsRegular() {
		return fmt.Errorf("secret %s is not a regular file (%s)", path, fi.Mode().Type())
	}
	if m := fi.Mode().Perm(); m&0o077 != 0 {
		return fmt.Errorf("secret %s has mode %04o: group and others must have no access (chmod %s)", path, m, map[bool]string{true: "0700", false: "0600"}[fi.IsDir()])
	}
	return nil
}

// Get returns the secret name, or an error saying it is missing.
func (s Secrets) Get(name string) ([]byte, error) {
	b, ok := s[name]
	if !ok {
		return nil, fmt.Errorf("secret %s/%s missing", v1alpha1.SecretsDir, name)
	}
	return b, nil
}

// Token returns the bootstrap token, checked.
func (s Secrets) Token() (string, error) {
	b, err := s.Get(v1alpha1.Token)
	if err != nil {
		return "", err
	}
	return ParseToken(b)
}

// CAHash returns the cluster CA's --discovery-token-ca-cert-hash.
func (s Secrets) CAHash() (string, error) {
	b, err := s.Get(v1alpha1.CACert)
	if err != nil {
		return "", err
	}
	return CAHash(b)
}
