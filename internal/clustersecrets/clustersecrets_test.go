package clustersecrets

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"kpaas.dev/appliance/api/cluster/v1alpha1"
)

func testCluster(t *testing.T) *v1alpha1.Cluster {
	t.Helper()
	c, err := v1alpha1.ParseFile("../../api/cluster/v1alpha1/testdata/site.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var now = time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)

// generated returns a folder with freshly generated secrets.
func generated(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := Generate(dir, testCluster(t), now); err != nil {
		t.Fatal(err)
	}
	return dir
}

func secretPath(dir, name string) string {
	return filepath.Join(dir, v1alpha1.SecretsDir, filepath.FromSlash(name))
}

func TestGenerateModes(t *testing.T) {
	dir := generated(t)
	for _, name := range Names {
		fi, err := os.Stat(secretPath(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", name, fi.Mode())
		}
	}
	for _, d := range []string{"secrets", "secrets/pki", "secrets/pki/etcd"} {
		fi, err := os.Stat(filepath.Join(dir, d))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: mode %v, want 0700", d, fi.Mode())
		}
	}
	// No temp file is left behind.
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if strings.HasPrefix(d.Name(), ".tmp-") {
			t.Errorf("left over: %s", p)
		}
		return nil
	})
}

func parseCert(t *testing.T, b []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatal("no PEM block")
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestGenerateCAs(t *testing.T) {
	dir := generated(t)
	for _, ca := range []struct{ cert, key, cn string }{
		{v1alpha1.CACert, v1alpha1.CAKey, "kubernetes"},
		{v1alpha1.FrontProxyCACert, v1alpha1.FrontProxyCAKey, "front-proxy-ca"},
		{v1alpha1.EtcdCACert, v1alpha1.EtcdCAKey, "etcd-ca"},
	} {
		b, err := os.ReadFile(secretPath(dir, ca.cert))
		if err != nil {
			t.Fatal(err)
		}
		c := parseCert(t, b)
		if c.Subject.CommonName != ca.cn || !c.IsCA || c.KeyUsage&x509.KeyUsageCertSign == 0 {
			t.Errorf("%s: CN %q, CA %v, usage %v", ca.cert, c.Subject.CommonName, c.IsCA, c.KeyUsage)
		}
		if got := c.NotAfter.Sub(now); got != CAValidity {
			t.Errorf("%s: valid for %v after now, want 10 years", ca.cert, got)
		}
		if c.PublicKeyAlgorithm != x509.RSA || c.PublicKey.(interface{ Size() int }).Size() != 256 {
			t.Errorf("%s: not RSA 2048", ca.cert)
		}
		if _, err := exec.LookPath("openssl"); err != nil {
			continue
		}
		// openssl: the CA verifies itself, and the key is the certificate's.
		openssl(t, "verify", "-CAfile", secretPath(dir, ca.cert), secretPath(dir, ca.cert))
		certPub := openssl(t, "x509", "-in", secretPath(dir, ca.cert), "-noout", "-pubkey")
		keyPub := openssl(t, "pkey", "-in", secretPath(dir, ca.key), "-pubout")
		if certPub != keyPub {
			t.Errorf("%s does not belong to %s", ca.key, ca.cert)
		}
	}
	if _, err := exec.LookPath("openssl"); err == nil {
		saPub := openssl(t, "pkey", "-in", secretPath(dir, v1alpha1.SAKey), "-pubout")
		b, _ := os.ReadFile(secretPath(dir, v1alpha1.SAPub))
		if saPub != string(b) {
			t.Errorf("sa.pub is not sa.key's public key")
		}
		openssl(t, "rsa", "-in", secretPath(dir, v1alpha1.SAKey), "-check", "-noout")
	}
	for _, k := range []string{v1alpha1.CAKey, v1alpha1.SAKey} {
		b, _ := os.ReadFile(secretPath(dir, k))
		if !bytes.HasPrefix(b, []byte("-----BEGIN RSA PRIVATE KEY-----")) {
			t.Errorf("%s is not a PEM RSA private key", k)
		}
	}
}

// openssl runs openssl and returns its standard output.
func openssl(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command("openssl", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("openssl %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

func TestToken(t *testing.T) {
	dir := generated(t)
	b, err := os.ReadFile(secretPath(dir, v1alpha1.Token))
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`^[a-z0-9]{6}\.[a-z0-9]{16}\n$`)
	if !re.Match(b) {
		t.Errorf("token file %q", b)
	}
	seen := map[string]bool{}
	for range 1000 {
		tok, err := NewToken()
		if err != nil {
			t.Fatal(err)
		}
		if !re.MatchString(tok+"\n") || seen[tok] {
			t.Fatalf("token %q (seen before: %v)", tok, seen[tok])
		}
		seen[tok] = true
	}
	for _, bad := range []string{"", "abcdef.0123456789abcde", "ABCDEF.0123456789abcdef", "abcdef0123456789abcdef0"} {
		if _, err := ParseToken([]byte(bad)); err == nil || strings.Contains(err.Error(), bad) && bad != "" {
			t.Errorf("ParseToken(%q): %v", bad, err)
		}
	}
}

func TestAdminKubeconfig(t *testing.T) {
	dir := generated(t)
	path := secretPath(dir, v1alpha1.AdminKubeconfig)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var kc kubeconfig
	if err := yaml.UnmarshalStrict(b, &kc); err != nil {
		t.Fatal(err)
	}
	if kc.APIVersion != "v1" || kc.Kind != "Config" || kc.CurrentContext != "site" ||
		len(kc.Clusters) != 1 || kc.Clusters[0].Name != "site" || kc.Clusters[0].Cluster.Server != "https://10.0.0.11:6443" ||
		len(kc.Contexts) != 1 || kc.Contexts[0].Name != "site" || kc.Contexts[0].Context.Cluster != "site" ||
		len(kc.Users) != 1 || kc.Contexts[0].Context.User != kc.Users[0].Name {
		t.Errorf("kubeconfig: %+v", kc)
	}
	ca, _ := os.ReadFile(secretPath(dir, v1alpha1.CACert))
	if !bytes.Equal(kc.Clusters[0].Cluster.CertificateAuthorityData, ca) {
		t.Error("certificate-authority-data is not ca.crt")
	}
	client := parseCert(t, kc.Users[0].User.ClientCertificateData)
	if client.Subject.CommonName != "kubernetes-admin" || !slices.Equal(client.Subject.Organization, []string{"kubeadm:cluster-admins"}) ||
		!slices.Contains(client.ExtKeyUsage, x509.ExtKeyUsageClientAuth) || client.IsCA {
		t.Errorf("client certificate: %v %v", client.Subject, client.ExtKeyUsage)
	}
	if _, err := exec.LookPath("openssl"); err == nil {
		// openssl verifies the chain: the cluster CA signed the client certificate.
		cert := filepath.Join(t.TempDir(), "admin.crt")
		os.WriteFile(cert, kc.Users[0].User.ClientCertificateData, 0o600)
		openssl(t, "verify", "-CAfile", secretPath(dir, v1alpha1.CACert), "-purpose", "sslclient", cert)
		for _, other := range []string{v1alpha1.FrontProxyCACert, v1alpha1.EtcdCACert} {
			if err := exec.Command("openssl", "verify", "-CAfile", secretPath(dir, other), cert).Run(); err == nil {
				t.Errorf("%s verifies the admin certificate", other)
			}
		}
	}
	if _, err := exec.LookPath("kubectl"); err == nil {
		// The real kubectl reads it (offline: config subcommands only).
		out, err := exec.Command("kubectl", "--kubeconfig", path, "config", "view", "--minify", "-o",
			"jsonpath={.current-context} {.clusters[0].cluster.server} {.users[0].name}").CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl config view: %v: %s", err, out)
		}
		if want := "site https://10.0.0.11:6443 kubernetes-admin@site"; string(out) != want {
			t.Errorf("kubectl: %q, want %q", out, want)
		}
	}
}

// TestCAHash checks against a value computed independently:
// openssl x509 -pubkey -noout -in testdata/ca.crt | openssl pkey -pubin -outform der | sha256sum
func TestCAHash(t *testing.T) {
	b, err := os.ReadFile("testdata/ca.crt")
	if err != nil {
		t.Fatal(err)
	}
	got, err := CAHash(b)
	if err != nil {
		t.Fatal(err)
	}
	if want := "sha256:ca1dca905e20d3ada2f3734bd861dc935cb826755b67663ac6a1a83f5e7aa84d"; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	if _, err := CAHash([]byte("not pem")); err == nil {
		t.Error("CAHash of garbage succeeded")
	}
	// And on a generated CA, through openssl again.
	if _, err := exec.LookPath("sh"); err != nil {
		return
	}
	dir := generated(t)
	s, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	got, err = s.CAHash()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("sh", "-c", `openssl x509 -pubkey -noout -in "$1" | openssl pkey -pubin -outform der | sha256sum`, "sh", secretPath(dir, v1alpha1.CACert)).Output()
	if err != nil {
		t.Skipf("openssl: %v", err)
	}
	if want := "sha256:" + strings.Fields(string(out))[0]; got != want {
		t.Errorf("got %s, openssl says %s", got, want)
	}
}

func TestForRole(t *testing.T) {
	if got, want := ForRole(v1alpha1.RoleWorker), []string{v1alpha1.CACert, v1alpha1.Token}; !slices.Equal(got, want) {
		t.Errorf("worker: %v, want %v", got, want)
	}
	cp := ForRole(v1alpha1.RoleControlPlane)
	if slices.Contains(cp, v1alpha1.AdminKubeconfig) || len(cp) != len(Names)-1 {
		t.Errorf("control plane: %v", cp)
	}
	if got := ForRole("master"); got != nil {
		t.Errorf("unknown role: %v", got)
	}
	// By content: no file a worker gets holds a private key, whatever its name.
	dir := generated(t)
	s, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range ForRole(v1alpha1.RoleWorker) {
		b := s[name]
		if len(b) == 0 || bytes.Contains(b, []byte("PRIVATE KEY")) || bytes.Contains(b, []byte("client-key-data")) {
			t.Errorf("worker secret %s holds a private key or is empty", name)
		}
	}
	keys := 0
	for _, name := range cp {
		if bytes.Contains(s[name], []byte("PRIVATE KEY")) {
			keys++
		}
	}
	if keys != 4 {
		t.Errorf("control plane gets %d private keys, want 4 (three CAs and sa.key)", keys)
	}
}

func TestGenerateRefusesToOverwrite(t *testing.T) {
	dir := generated(t)
	c := testCluster(t)
	before, _ := os.ReadFile(secretPath(dir, v1alpha1.CAKey))
	err := Generate(dir, c, now)
	if err == nil || !strings.Contains(err.Error(), "refusing to replace") || !strings.Contains(err.Error(), "pki/ca.key") {
		t.Fatalf("got %v, want a refusal naming the files", err)
	}
	after, _ := os.ReadFile(secretPath(dir, v1alpha1.CAKey))
	if !bytes.Equal(before, after) {
		t.Fatal("a refused Generate changed ca.key")
	}
	// One file is enough to refuse.
	one := t.TempDir()
	os.MkdirAll(filepath.Join(one, "secrets"), 0o700)
	os.WriteFile(secretPath(one, v1alpha1.Token), []byte("x"), 0o600)
	if err := Generate(one, c, now); err == nil {
		t.Fatal("Generate replaced an existing token")
	}
	if err := Generate(dir, c, now, WithOverwrite()); err != nil {
		t.Fatal(err)
	}
	after, _ = os.ReadFile(secretPath(dir, v1alpha1.CAKey))
	if bytes.Equal(before, after) {
		t.Fatal("WithOverwrite kept the old key")
	}
}

func TestRotateToken(t *testing.T) {
	dir := generated(t)
	before, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := RotateToken(dir); err != nil {
		t.Fatal(err)
	}
	after, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range Names {
		same := bytes.Equal(before[name], after[name])
		if name == v1alpha1.Token && same || name != v1alpha1.Token && !same {
			t.Errorf("%s: same after rotation: %v", name, same)
		}
	}
	if _, err := after.Token(); err != nil {
		t.Error(err)
	}
	if fi, _ := os.Stat(secretPath(dir, v1alpha1.Token)); fi.Mode() != 0o600 {
		t.Errorf("rotated token mode %v", fi.Mode())
	}
	if err := RotateToken(t.TempDir()); err == nil {
		t.Error("RotateToken without secrets succeeded")
	}
}

func TestLoadChecksModes(t *testing.T) {
	dir := generated(t)
	if s, err := Load(dir); err != nil || len(s) != len(Names) {
		t.Fatalf("Load: %d files, %v", len(s), err)
	}
	key := secretPath(dir, v1alpha1.EtcdCAKey)
	os.Chmod(key, 0o640)
	_, err := Load(dir)
	if err == nil || !strings.Contains(err.Error(), key) || !strings.Contains(err.Error(), "mode 0640") {
		t.Errorf("got %v, want an error naming %s and mode 0640", err, key)
	}
	os.Chmod(key, 0o600)
	os.Chmod(filepath.Join(dir, "secrets", "pki"), 0o755)
	_, err = Load(dir)
	if err == nil || !strings.Contains(err.Error(), "mode 0755") {
		t.Errorf("got %v, want an error for the folder's mode 0755", err)
	}
	os.Chmod(filepath.Join(dir, "secrets", "pki"), 0o700)

	// A worker's set: only two files, and Load takes it.
	w := t.TempDir()
	os.MkdirAll(filepath.Join(w, "secrets", "pki"), 0o700)
	os.WriteFile(secretPath(w, v1alpha1.CACert), []byte("x"), 0o600)
	os.WriteFile(secretPath(w, v1alpha1.Token), []byte("abcdef.0123456789abcdef\n"), 0o600)
	s, err := Load(w)
	if err != nil || len(s) != 2 {
		t.Fatalf("worker set: %v, %v", s, err)
	}
	if tok, err := s.Token(); err != nil || tok != "abcdef.0123456789abcdef" {
		t.Errorf("token %q, %v", tok, err)
	}
	if _, err := s.Get(v1alpha1.CAKey); err == nil {
		t.Error("Get of a missing secret succeeded")
	}
	if _, err := Load(t.TempDir()); err == nil {
		t.Error("Load without a secrets folder succeeded")
	}
}
