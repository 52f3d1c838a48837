package exec_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"kpaas.dev/appliance/internal/exec"
)

func TestHostRunOutputAndError(t *testing.T) {
	h := exec.Host{}
	out, err := h.Run(context.Background(), exec.Command("sh", "-c", "echo out; echo err >&2"))
	if err != nil || string(out) != "out\n" {
		t.Fatalf("out %q, err %v", out, err)
	}
	_, err = h.Run(context.Background(), exec.Command("sh", "-c", "echo why >&2; exit 3"))
	var re *exec.RunError
	if !errors.As(err, &re) || re.ExitCode != 3 || exec.ExitCode(err) != 3 {
		t.Fatalf("err = %#v", err)
	}
	if got := err.Error(); got != "sh -c 'echo why >&2; exit 3': exit status 3: why" {
		t.Errorf("error text %q", got)
	}
	_, err = h.Run(context.Background(), exec.Command("/nonexistent/prog"))
	if exec.ExitCode(err) != -1 || !strings.Contains(err.Error(), "/nonexistent/prog") {
		t.Errorf("missing program: %v", err)
	}
}

func TestStdinAndEnv(t *testing.T) {
	c := exec.Command("sh", "-c", `cat; echo "$X"`)
	c.Stdin = []byte("in\n")
	c.Env = []string{"X=y"}
	out, err := exec.Host{}.Run(context.Background(), c)
	if err != nil || string(out) != "in\ny\n" {
		t.Fatalf("out %q, err %v", out, err)
	}
}

func TestSecretsNeverInErrors(t *testing.T) {
	const token = "abcdef.0123456789abcdef"
	c := exec.Command("sh", "-c", "echo using "+token+" >&2; exit 1")
	c.Redact = []string{token}
	_, err := exec.Host{}.Run(context.Background(), c)
	if err == nil || strings.Contains(err.Error(), token) || !strings.Contains(err.Error(), "<redacted>") {
		t.Errorf("error %q", err)
	}
	if strings.Contains(c.String(), token) {
		t.Errorf("command line %q", c.String())
	}
	s := exec.Command("kubeadm", "token", "create", token)
	s.Secret = true
	if strings.Contains(s.String(), token) {
		t.Errorf("secret command line %q", s.String())
	}
}

func TestCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := exec.Host{}.Run(ctx, exec.Command("sleep", "5"))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v", err)
	}
}

func TestProgressLinesRedacted(t *testing.T) {
	const token = "abcdef.0123456789abcdef"
	var buf strings.Builder
	c := exec.Command("sh", "-c", "echo '[init] step one'; echo 'token "+token+"' >&2; printf 'last'")
	c.Redact = []string{token}
	c.Progress = &buf
	c.ProgressPrefix = "kubeadm: "
	if _, err := (exec.Host{}).Run(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	got := buf.String()
	for _, want := range []string{"kubeadm: [init] step one\n", "kubeadm: token <redacted>\n", "kubeadm: last\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("progress %q lacks %q", got, want)
		}
	}
	if strings.Contains(got, token) {
		t.Errorf("progress shows the token: %q", got)
	}
}
