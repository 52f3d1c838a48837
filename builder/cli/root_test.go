package cli

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"kpaas.dev/appliance/builder/bake"
	"kpaas.dev/appliance/builder/image"
	"kpaas.dev/appliance/internal/bundle"
	"kpaas.dev/appliance/internal/push"
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

// TestJSONKeysCamelCase: every --json output uses one convention: each
// field has a camelCase json name (no Go field names), all the way down.
func TestJSONKeysCamelCase(t *testing.T) {
	for _, v := range []any{bake.Summary{}, bundle.Report{}, bundle.Inspection{}, lintResult{}, image.Summary{}, push.Summary{}} {
		checkJSONNames(t, reflect.TypeOf(v), reflect.TypeOf(v).String(), map[reflect.Type]bool{})
	}
}

func checkJSONNames(t *testing.T, typ reflect.Type, path string, seen map[reflect.Type]bool) {
	t.Helper()
	for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice || typ.Kind() == reflect.Array || typ.Kind() == reflect.Map {
		typ = typ.Elem()
	}
	if typ.Kind() != reflect.Struct || seen[typ] || typ.PkgPath() == "time" || strings.HasPrefix(typ.PkgPath(), "github.com/") {
		return
	}
	seen[typ] = true
	for i := range typ.NumField() {
		f := typ.Field(i)
		if !f.IsExported() {
			continue
		}
		tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if tag == "-" {
			continue
		}
		if f.Anonymous && tag == "" {
			checkJSONNames(t, f.Type, path, seen)
			continue
		}
		if tag == "" || !regexp.MustCompile(`^[a-z][a-zA-Z0-9]*$`).MatchString(tag) {
			t.Errorf("%s.%s: json name %q, want camelCase", path, f.Name, tag)
		}
		checkJSONNames(t, f.Type, path+"."+f.Name, seen)
	}
}
