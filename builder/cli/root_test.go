package cli

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestUnknownCommandFails: a mistyped command exits non-zero and suggests
// the right one; a command group alone still prints its help.
func TestUnknownCommandFails(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"bundle", "verfy"}, `unknown command "verfy" for "kpaas bundle" (did you mean "verify"?)`},
		{[]string{"key", "gen"}, `unknown command "gen" for "kpaas key" (did you mean "generate"?)`},
		{[]string{"bakee"}, `unknown command "bakee" for "kpaas"`},
		{[]string{"toolchain", "biuld"}, `unknown command "biuld" for "kpaas toolchain"`},
		{[]string{"bundle", "frobnicate"}, `unknown command "frobnicate" for "kpaas bundle"; see 'kpaas bundle --help'`},
	} {
		_, _, err := kpaas(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("kpaas %s: err = %v, want %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
	out, _, err := kpaas(t, "bundle")
	if err != nil || !strings.Contains(out, "verify") {
		t.Errorf("kpaas bundle: err = %v, output %q; want its help", err, out)
	}
}

// TestReadmeBakeSynopsis: the README's bake synopsis names every flag of
// kpaas bake.
func TestReadmeBakeSynopsis(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var synopsis string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "| `kpaas bake ") {
			synopsis = line
		}
	}
	if synopsis == "" {
		t.Fatal("README has no kpaas bake row")
	}
	// Flag usages read "  -o, --out string   …" or "      --json   …".
	usage := newBakeCmd(&streams{}).Flags().FlagUsages()
	for _, m := range regexp.MustCompile(`(?m)^\s+(?:-(\w), )?--([a-z-]+)`).FindAllStringSubmatch(usage, -1) {
		short, long := m[1], m[2]
		if !strings.Contains(synopsis, "--"+long) && (short == "" || !regexp.MustCompile(`[\[ ]-`+short+`[\] ]`).MatchString(synopsis)) {
			t.Errorf("README's bake synopsis lacks --%s", long)
		}
	}
}
