package clustersecrets

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"kpaas.dev/appliance/api/cluster/v1alpha1"
	"kpaas.dev/appliance/internal/atomicfile"
)

// Validity periods, as kubeadm chooses them.
const (
	CAValidity   = 10 * 365 * 24 * time.Hour
	CertValidity = 365 * 24 * time.Hour // the admin client certificate
	// backdate allows for nodes whose clocks are a little behind.
	backdate = 5 * time.Minute
	keyBits  = 2048
)

// The admin kubeconfig's client identity: kubeadm init binds the group to
// cluster-admin (ClusterRoleBinding kubeadm:cluster-admins).
const (
	AdminUser  = "kubernetes-admin"
	AdminGroup = "kubeadm:cluster-admins"
)

// Option changes what Generate does.
type Option func(*options)

type options struct {
	overwrite bool
}

// WithOverwrite lets Generate replace secrets that exist. Without it,
// Generate refuses to touch a folder that holds any: new CAs would cut off
// every node that trusts the old ones.
func WithOverwrite() Option { return func(o *options) { o.overwrite = true } }

// Generate writes a fresh set of secrets for c under dir/secrets: the
// cluster CA (CN kubernetes), the front-proxy CA (front-proxy-ca) and the
// etcd CA (etcd-ca), RSA 2048 and self-signed for 10 years from now; the
// service-account key pair (sa.key, PKCS #1; sa.pub, PKIX); a bootstrap
// token; and the operator's admin.conf, a kubeconfig for
// https://ENDPOINT with a client certificate (CN kubernetes-admin, O
// kubeadm:cluster-admins, one year) whose cluster and context are named
// c.Metadata.Name. c must be defaulted and valid.
//
// Everything is made in memory first and then written file by file, each
// atomically (temp file, fsync, rename) with mode 0600 in folders 0700.
// Generate fails without writing anything when any secret exists, unless
// WithOverwrite is given.
func Generate(dir string, c *v1alpha1.Cluster, now time.Time, opts ...Option) error {
	var o options
	for _, fn := range opts {
		fn(&o)
	}
	if c.Metadata.Name == "" || c.ControlPlaneEndpoint.Host == "" || c.ControlPlaneEndpoint.Port == 0 {
		return errors.New("generating secrets: the cluster needs a name and an endpoint")
	}
	if !o.overwrite {
		if existing := Existing(dir); len(existing) > 0 {
			return fmt.Errorf("secrets exist in %s (%s): refusing to replace them", filepath.Join(dir, v1alpha1.SecretsDir), strings.Join(existing, ", "))
		}
	}
	files, err := generate(c, now)
	if err != nil {
		return fmt.Errorf("generating secrets: %w", err)
	}
	return write(dir, files)
}

// Existing returns the secret files present under dir/secrets.
func Existing(dir string) []string {
	var out []string
	for _, name := range Names {
		if _, err := os.Lstat(filepath.Join(dir, v1alpha1.SecretsDir, filepath.FromSlash(name))); !errors.Is(err, fs.ErrNotExist) {
			out = append(out, name)
		}
	}
	return out
}

// RotateToken replaces only the bootstrap token under dir/secrets with a
// fresh one. The other secrets must exist (it is not a way to make them).
func RotateToken(dir string) error {
	if _, err := Load(dir); err != nil {
		return err
	}
	if _, err := os.Lstat(filepath.Join(dir, v1alpha1.SecretsDir, v1alpha1.Token)); err != nil {
		return fmt.Errorf("rotating the token: %w", err)
	}
	tok, err := NewToken()
	if err != nil {
		return err
	}
	return write(dir, map[string][]byte{v1alpha1.Token: []byte(tok + "\n")})
}

// write puts files under dir/secrets, each atomically.
func write(dir string, files map[string][]byte) error {
	root := filepath.Join(dir, v1alpha1.SecretsDir)
	for _, name := range Names {
		data, ok := files[name]
		if !ok {
			continue
		}
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := mkdirPrivate(root, filepath.Dir(p)); err != nil {
			return err
		}
		if err := writeFileAtomic(p, data); err != nil {
			return fmt.Errorf("writing secret %s: %w", name, err)
		}
	}
	return nil
}

// mkdirPrivate makes the folders from root down to dir with mode 0700 and
// closes existing ones to group and others.
func mkdirPrivate(root, dir string) error {
	rel, err := filepath.Rel(root, dir)
	if err != nil {
		return err
	}
	p := root
	for _, part := range append([]string{"."}, strings.Split(rel, string(filepath.Separator))...) {
		p = filepath.Join(p, part)
		if err := os.MkdirAll(p, 0o700); err != nil {
			return fmt.Errorf("making secrets folder: %w", err)
		}
		if err := os.Chmod(p, 0o700); err != nil {
			return fmt.Errorf("making secrets folder: %w", err)
		}
	}
	return nil
}

// writeFileAtomic writes data to path with mode 0600 through a temp file
// beside it (created 0600, so the bytes are never readable by others).
func writeFileAtomic(path string, data []byte) error {
	return atomicfile.WriteFile(path, data, 0o600)
}

// generate makes every secret in memory.
func generate(c *v1alpha1.Cluster, now time.Time) (map[string][]byte, error) {
	files := map[string][]byte{}
	var ca *authority
	for _, a := range []struct{ cn, cert, key string }{
		{"kubernetes", v1alpha1.CACert, v1alpha1.CAKey},
		{"front-proxy-ca", v1alpha1.FrontProxyCACert, v1alpha1.FrontProxyCAKey},
		{"etcd-ca", v1alpha1.EtcdCACert, v1alpha1.EtcdCAKey},
	} {
		auth, err := newCA(a.cn, now)
		if err != nil {
			return nil, err
		}
		files[a.cert] = auth.certPEM
		files[a.key] = keyPEM(auth.key)
		if ca == nil {
			ca = auth
		}
	}
	sa, err := rsa.GenerateKey(rand.Reader, keyBits)
	if err != nil {
		return nil, err
	}
	files[v1alpha1.SAKey] = keyPEM(sa)
	pub, err := x509.MarshalPKIXPublicKey(&sa.PublicKey)
	if err != nil {
		return nil, err
	}
	files[v1alpha1.SAPub] = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})
	tok, err := NewToken()
	if err != nil {
		return nil, err
	}
	files[v1alpha1.Token] = []byte(tok + "\n")
	files[v1alpha1.AdminKubeconfig], err = adminKubeconfig(c, ca, now)
	if err != nil {
		return nil, err
	}
	return files, nil
}

type authority struct {
	cert    *x509.Certificate
	certPEM []byte
	key     *rsa.PrivateKey
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 63))
}

// newCA makes a self-signed CA as kubeadm's certs phase does.
func newCA(cn string, now time.Time) (*authority, error) {
	key, err := rsa.GenerateKey(rand.Reader, keyBits)
	if err != nil {
		return nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: cn},
		DNSNames:              []string{cn},
		NotBefore:             now.Add(-backdate).UTC(),
		NotAfter:              now.Add(CAValidity).UTC(),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("making CA %s: %w", cn, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &authority{cert: cert, certPEM: certPEM(der), key: key}, nil
}

func certPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// keyPEM encodes an RSA key as kubeadm writes it: PKCS #1.
func keyPEM(k *rsa.PrivateKey) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
}

// kubeconfig is the part of a kubeconfig file written here.
type kubeconfig struct {
	APIVersion     string         `json:"apiVersion"`
	Kind           string         `json:"kind"`
	Clusters       []namedCluster `json:"clusters"`
	Contexts       []namedContext `json:"contexts"`
	CurrentContext string         `json:"current-context"`
	Users          []namedUser    `json:"users"`
	Preferences    struct{}       `json:"preferences"`
}

type namedCluster struct {
	Name    string `json:"name"`
	Cluster struct {
		Server                   string `json:"server"`
		CertificateAuthorityData []byte `json:"certificate-authority-data"`
	} `json:"cluster"`
}

type namedContext struct {
	Name    string `json:"name"`
	Context struct {
		Cluster string `json:"cluster"`
		User    string `json:"user"`
	} `json:"context"`
}

type namedUser struct {
	Name string `json:"name"`
	User struct {
		ClientCertificateData []byte `json:"client-certificate-data"`
		ClientKeyData         []byte `json:"client-key-data"`
	} `json:"user"`
}

// adminKubeconfig makes the operator's kubeconfig with a client
// certificate the cluster CA signed.
func adminKubeconfig(c *v1alpha1.Cluster, ca *authority, now time.Time) ([]byte, error) {
	key, err := rsa.GenerateKey(rand.Reader, keyBits)
	if err != nil {
		return nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: AdminUser, Organization: []string{AdminGroup}},
		NotBefore:    now.Add(-backdate).UTC(),
		NotAfter:     now.Add(CertValidity).UTC(),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("making the admin certificate: %w", err)
	}
	name := c.Metadata.Name
	user := AdminUser + "@" + name
	kc := kubeconfig{APIVersion: "v1", Kind: "Config", CurrentContext: name}
	var cl namedCluster
	cl.Name = name
	cl.Cluster.Server = "https://" + c.ControlPlaneEndpoint.String()
	cl.Cluster.CertificateAuthorityData = ca.certPEM
	var ctx namedContext
	ctx.Name = name
	ctx.Context.Cluster, ctx.Context.User = name, user
	var u namedUser
	u.Name = user
	u.User.ClientCertificateData = certPEM(der)
	u.User.ClientKeyData = keyPEM(key)
	kc.Clusters, kc.Contexts, kc.Users = []namedCluster{cl}, []namedContext{ctx}, []namedUser{u}
	return yaml.Marshal(kc)
}

// tokenChars are the characters of a bootstrap token.
const tokenChars = "abcdefghijklmnopqrstuvwxyz0123456789"

var tokenPattern = regexp.MustCompile(`^[a-z0-9]{6}\.[a-z0-9]{16}$`)

// NewToken returns a fresh bootstrap token, [a-z0-9]{6}.[a-z0-9]{16}, from
// crypto/rand.
func NewToken() (string, error) {
	b := make([]byte, 0, 23)
	for len(b) < 23 {
		if len(b) == 6 {
			b = append(b, '.')
			continue
		}
		n, err := rand.Int(rand.Reader, big.NewInt(int64(len(tokenChars))))
		if err != nil {
			return "", fmt.Errorf("making a bootstrap token: %w", err)
		}
		b = append(b, tokenChars[n.Int64()])
	}
	return string(b), nil
}

// ParseToken checks a token file's content and returns the token. The
// error never repeats the content.
func ParseToken(b []byte) (string, error) {
	tok := string(bytes.TrimSpace(b))
	if !tokenPattern.MatchString(tok) {
		return "", errors.New("secret token: not a bootstrap token of the form [a-z0-9]{6}.[a-z0-9]{16}")
	}
	return tok, nil
}

// CAHash returns what kubeadm join's --discovery-token-ca-cert-hash wants
// for a CA certificate (PEM): "sha256:" and the hex SHA-256 of its DER
// SubjectPublicKeyInfo.
func CAHash(caCertPEM []byte) (string, error) {
	block, _ := pem.Decode(caCertPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return "", errors.New("CA certificate: no PEM CERTIFICATE block")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return "", fmt.Errorf("CA certificate: %w", err)
	}
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(sum[:]), nil
}
