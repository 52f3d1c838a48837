package clustersecrets

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestGeneratePlatform(t *testing.T) {
	dir := t.TempDir()
	made, err := GeneratePlatform(dir, []string{"harbor-admin", "mariadb-root"})
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
	made, err = GeneratePlatform(dir, []string{"harbor-admin", "keycloak-admin"})
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
	if _, err := GeneratePlatform(dir, []string{"Bad/Name"}); err == nil {
		t.Error("a bad name was accepted")
	}
	a, _ := Password(32)
	b, _ := Password(32)
	if a == b || len(a) != 32 || strings.ContainsAny(a, "0O1lI") {
		t.Errorf("passwords %q %q", a, b)
	}
}
