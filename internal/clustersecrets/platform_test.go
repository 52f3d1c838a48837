package clustersecrets

import (
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	bundlev1 "kpaas.dev/appliance/api/bundle/v1alpha1"
)

func passwords(names ...string) []bundlev1.PlatformSecret {
	var out []bundlev1.PlatformSecret
	for _, n := range names {
		out = append(out, bundlev1.PlatformSecret{Name: n})
	}
	return out
}

func TestGeneratePlatform(t *testing.T) {
	dir := t.TempDir()
	made, err := GeneratePlatform(dir, passwords("harbor-admin", "mariadb-root"))
	if err != nil || strings.Join(made, ",") != "harbor-admin,mariadb-root" {
		t.Fatalf("made %v, %v", made, err)
	}
	first, err := ReadPlatform(dir, "harbor-admin")
	if err != nil || len(strings.TrimSpace(string(first))) != PasswordLength {
		t.Fatalf("read %q, %v", first, err)
	}
	for _, p := range []string{"secrets", "secrets/platform", "secrets/platform/harbor-admin"} {
		fi, err := os.Stat(filepath.Join(dir, p))
		if err != nil {
			t.Fatal(err)
		}
		want := os.FileMode(0o600)
		if fi.IsDir() {
			want = 0o700
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %04o, want %04o", p, fi.Mode().Perm(), want)
		}
	}
	// Again, with one more: existing secrets are kept.
	made, err = GeneratePlatform(dir, passwords("harbor-admin", "keycloak-admin"))
	if err != nil || strings.Join(made, ",") != "keycloak-admin" {
		t.Fatalf("made %v, %v", made, err)
	}
	again, _ := ReadPlatform(dir, "harbor-admin")
	if string(again) != string(first) {
		t.Error("an existing platform secret was replaced")
	}
	names, err := PlatformNames(dir)
	if err != nil || strings.Join(names, ",") != "platform/harbor-admin,platform/keycloak-admin,platform/mariadb-root" {
		t.Errorf("names %v, %v", names, err)
	}
	if _, err := GeneratePlatform(dir, passwords("Bad/Name")); err == nil {
		t.Error("a bad name was accepted")
	}
	a, _ := Password(32)
	b, _ := Password(32)
	if a == b || len(a) != 32 || strings.ContainsAny(a, "0O1lI") {
		t.Errorf("passwords %q %q", a, b)
	}
}

// A secret's other parts: a password of a given length, its htpasswd
// line (also added later to a password that exists, from it), and a key
// pair; each made once.
func TestGeneratePlatformParts(t *testing.T) {
	dir := t.TempDir()
	secrets := []bundlev1.PlatformSecret{
		{Name: "core", Length: 16},
		{Name: "xsrf", Length: 32},
		{Name: "registry"},
		{Name: "token", Type: bundlev1.SecretTLS},
	}
	if _, err := GeneratePlatform(dir, secrets); err != nil {
		t.Fatal(err)
	}
	for name, n := range map[string]int{"core": 16, "xsrf": 32, "registry": PasswordLength} {
		b, err := ReadPlatform(dir, name)
		if err != nil || len(strings.TrimSpace(string(b))) != n {
			t.Errorf("%s: %q, %v; want %d characters", name, b, err, n)
		}
	}
	password, _ := ReadPlatform(dir, "registry")

	// The bundle now wants the registry password's htpasswd line too.
	secrets[2].Htpasswd = "harbor_registry_user"
	made, err := GeneratePlatform(dir, secrets)
	if err != nil || strings.Join(made, ",") != "registry.htpasswd" {
		t.Fatalf("made %v, %v", made, err)
	}
	line, err := ReadPlatform(dir, "registry/htpasswd")
	if err != nil {
		t.Fatal(err)
	}
	user, hash, ok := strings.Cut(strings.TrimSpace(string(line)), ":")
	if !ok || user != "harbor_registry_user" {
		t.Fatalf("htpasswd line %q", line)
	}
	if err := bcrypt.CompareHashAndPassword([]byte(hash), []byte(strings.TrimSpace(string(password)))); err != nil {
		t.Errorf("the htpasswd line is not for the registry password: %v", err)
	}
	if again, _ := ReadPlatform(dir, "registry"); string(again) != string(password) {
		t.Error("the password changed when its htpasswd line was added")
	}

	crt, err := ReadPlatform(dir, "token/tls.crt")
	if err != nil {
		t.Fatal(err)
	}
	key, err := ReadPlatform(dir, "token.tls.key")
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(crt, key)
	if err != nil {
		t.Fatalf("the certificate and key do not go together: %v", err)
	}
	if _, ok := pair.PrivateKey.(*rsa.PrivateKey); !ok {
		t.Errorf("key %T, want RSA (Harbor signs its tokens with RS256)", pair.PrivateKey)
	}
	blk, _ := pem.Decode(crt)
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil || cert.Subject.CommonName != "token" || cert.CheckSignatureFrom(cert) != nil {
		t.Errorf("certificate %v (%v): want self-signed, CN token", cert.Subject, err)
	}
	// ca.crt is the same certificate: a client that trusts it verifies
	// the server that presents tls.crt under the secret's name (Notary's
	// server and signer, in the chart's notary.secretName).
	ca, err := ReadPlatform(dir, "token/ca.crt")
	if err != nil || string(ca) != string(crt) {
		t.Fatalf("token/ca.crt: %v; the same as tls.crt: %v", err, string(ca) == string(crt))
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: "token"}); err != nil {
		t.Errorf("tls.crt does not verify against ca.crt for the name token: %v", err)
	}

	// Nothing is made again; a lone certificate gets a new pair.
	if made, err := GeneratePlatform(dir, secrets); err != nil || len(made) != 0 {
		t.Errorf("second run made %v, %v", made, err)
	}
	if err := os.Remove(filepath.Join(dir, "secrets", "platform", "token.tls.key")); err != nil {
		t.Fatal(err)
	}
	made, err = GeneratePlatform(dir, secrets)
	if err != nil || strings.Join(made, ",") != "token.tls.key,token.tls.crt" {
		t.Errorf("made %v, %v", made, err)
	}
	names, _ := PlatformNames(dir)
	if strings.Join(names, ",") != "platform/core,platform/registry,platform/registry.htpasswd,platform/token.tls.crt,platform/token.tls.key,platform/xsrf" {
		t.Errorf("names %v", names)
	}
	if _, err := ReadPlatform(dir, "../secrets/platform/core"); err == nil {
		t.Error("ReadPlatform read a path outside the platform folder")
	}
}
