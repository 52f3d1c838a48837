package phases_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"kpaas.dev/appliance/agent/host"
	"kpaas.dev/appliance/agent/phases"
	cluster "kpaas.dev/appliance/api/cluster/v1alpha1"
	"kpaas.dev/appliance/internal/bundle"
	"kpaas.dev/appliance/internal/exec"
	"kpaas.dev/appliance/internal/exec/exectest"
	"kpaas.dev/appliance/internal/names"
	"kpaas.dev/appliance/internal/progress"
)

const (
	unsealKey = "k3y-0f-the-v4ult"
	rootToken = "hvs.r00t"
)

// fakeVault is a cluster with one Vault release, as kubectl shows it: the
// records kept, every object ready, and a Vault pod that starts
// uninitialised and sealed and seals itself when it restarts.
type fakeVault struct {
	mu          sync.Mutex
	initialized bool
	sealed      bool
	records     map[string]map[string]any
	inits       int
}

func (v *fakeVault) script(f *exectest.Fake) {
	ok := exectest.Response{}
	k := "kubectl --kubeconfig /etc/kubernetes/admin.conf "
	f.Reply("", exectest.Response{ExitCode: 1, Stderr: "unexpected"})
	f.On(k+"apply", func(c exec.Cmd) exectest.Response {
		var l struct{ Items []map[string]any }
		json.Unmarshal(c.Stdin, &l)
		v.mu.Lock()
		defer v.mu.Unlock()
		for _, it := range l.Items {
			md := it["metadata"].(map[string]any)
			if it["kind"] == "ConfigMap" {
				v.records[md["name"].(string)] = it
			}
		}
		return ok
	})
	f.On(k+"-n kpaas-system get configmaps -l kpaas.dev/release -o json", func(exec.Cmd) exectest.Response {
		v.mu.Lock()
		defer v.mu.Unlock()
		var items []any
		for _, r := range v.records {
			items = append(items, r)
		}
		b, _ := json.Marshal(map[string]any{"items": items})
		return exectest.Response{Stdout: string(b)}
	})
	f.On(k+"get -f - -o json", func(c exec.Cmd) exectest.Response {
		// Everything asked for is rolled out.
		var l struct{ Items []map[string]any }
		json.Unmarshal(c.Stdin, &l)
		for _, it := range l.Items {
			it["metadata"].(map[string]any)["generation"] = 1
			it["status"] = map[string]any{"observedGeneration": 1, "updatedReplicas": 1, "availableReplicas": 1}
		}
		b, _ := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "List", "items": l.Items})
		return exectest.Response{Stdout: string(b)}
	})
	f.Reply(k+"-n vault get pod vault-0 ", exectest.Response{Stdout: "Running"})
	f.On(k+"-n vault exec vault-0 -- vault status -format=json", func(exec.Cmd) exectest.Response {
		v.mu.Lock()
		defer v.mu.Unlock()
		b, _ := json.Marshal(map[string]any{"initialized": v.initialized, "sealed": v.sealed})
		if v.sealed {
			return exectest.Response{Stdout: string(b), ExitCode: 2}
		}
		return exectest.Response{Stdout: string(b)}
	})
	f.On(k+"-n vault exec vault-0 -- vault operator init", func(exec.Cmd) exectest.Response {
		v.mu.Lock()
		defer v.mu.Unlock()
		if v.initialized {
			return exectest.Response{ExitCode: 2, Stderr: "Vault is already initialized"}
		}
		v.initialized = true
		v.inits++
		return exectest.Response{Stdout: `{"unseal_keys_b64":["` + unsealKey + `"],"root_token":"` + rootToken + `"}`}
	})
	f.On(k+"-n vault exec -i vault-0 -- vault operator unseal", func(c exec.Cmd) exectest.Response {
		v.mu.Lock()
		defer v.mu.Unlock()
		if string(c.Stdin) != unsealKey {
			return exectest.Response{ExitCode: 2, Stderr: "invalid key"}
		}
		v.sealed = false
		return ok
	})
}

// Vault is initialised once, its key kept (0600), and unsealed on every
// boot it comes up sealed; no key or token reaches a log.
func TestPlatformVaultInitAndUnseal(t *testing.T) {
	root := t.TempDir()
	p := &bundle.LockPlatform{Releases: []bundle.LockRelease{
		{Name: "vault", Namespace: "vault", Manifests: "kpaas.local/manifests/broken:1", Timeout: "10m", Vault: true},
	}}
	platformBundle(t, filepath.Join(root, names.BundleDir), p)
	store, _ := bundle.Open(filepath.Join(root, names.BundleDir))
	lock, _ := store.ReadLock()
	c, _ := cluster.Parse("site.yaml", []byte(siteYAML))
	f := &exectest.Fake{}
	v := &fakeVault{sealed: true, records: map[string]map[string]any{}}
	v.script(f)
	out := &bytes.Buffer{}
	e := &phases.Env{Host: &host.Host{Root: root, Exec: f}, Bundle: store, Lock: lock, Cluster: c, Node: &c.Nodes[0],
		SecretsDir: filepath.Join(names.ConfigDir, cluster.SecretsDir), Progress: progress.New(out, progress.Terminal(false)), Wait: 0.001}
	ph := platformPhase(t)
	if plan := strings.Join(ph.Plan(e), "\n"); plan != "level 1: install vault (at most 2 at once), each behind its gate" {
		t.Errorf("plan:\n%s", plan)
	}
	if err := runPhase(e, ph); err != nil {
		t.Fatalf("%v\n%s\n%s", err, out, strings.Join(f.Lines(), "\n"))
	}
	if v.inits != 1 || v.sealed {
		t.Fatalf("after the first boot: %d inits, sealed %v", v.inits, v.sealed)
	}
	keyFile := filepath.Join(root, "var/lib/kpaas/platform/vault-vault.json")
	fi, err := os.Stat(keyFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi, err)
	}

	// A reboot: Vault comes up sealed; the check sees it, the run unseals
	// it with the kept key and initialises nothing.
	v.mu.Lock()
	v.sealed = true
	v.mu.Unlock()
	if err := runPhase(e, ph); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if v.inits != 1 || v.sealed {
		t.Errorf("after the reboot: %d inits, sealed %v", v.inits, v.sealed)
	}
	// The pod restarts between boots: renew unseals it.
	v.mu.Lock()
	v.sealed = true
	v.mu.Unlock()
	if err := phases.UnsealVaults(context.Background(), e); err != nil || v.sealed || v.inits != 1 {
		t.Errorf("UnsealVaults: %v, sealed %v, %d inits", err, v.sealed, v.inits)
	}
	if !strings.Contains(out.String(), "Vault initialised") {
		t.Errorf("output:\n%s", out)
	}
	for what, text := range map[string]string{"output": out.String(), "commands": strings.Join(f.Lines(), "\n")} {
		if strings.Contains(text, unsealKey) || strings.Contains(text, rootToken) {
			t.Errorf("the %s show Vault's key or token", what)
		}
	}
	for _, r := range v.records {
		b, _ := json.Marshal(r)
		if strings.Contains(string(b), unsealKey) {
			t.Errorf("a record holds the key: %s", b)
		}
	}
}
