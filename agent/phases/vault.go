package phases

import (
	"context"
	"encoding/json"
	"fmt"
	"path"
	"strings"

	"kpaas.dev/appliance/internal/bundle"
	"kpaas.dev/appliance/internal/exec"
)

// vaultStatus is what `vault status -format=json` says.
type vaultStatus struct {
	Initialized bool `json:"initialized"`
	Sealed      bool `json:"sealed"`
}

// vaultInit is what `vault operator init -format=json` prints; the agent
// keeps it (0600) on the first control plane's state partition, because
// the Vault it unseals cannot hold its own key.
type vaultInit struct {
	UnsealKeys []string `json:"unseal_keys_b64"`
	RootToken  string   `json:"root_token"`
}

// vaultPod is the Vault server pod of release r: the chart's StatefulSet
// is named after the release.
func vaultPod(r bundle.LockRelease) string { return r.Name + "-0" }

func vaultFile(r bundle.LockRelease) string { return path.Join(vaultDir, "vault-"+r.Name+".json") }

// vaultStatus asks the Vault pod. vault status exits 2 when sealed, with
// its JSON on standard output all the same.
func (in *installer) vaultStatus(ctx context.Context, r bundle.LockRelease) (vaultStatus, error) {
	var st vaultStatus
	out, err := in.kubectl(ctx, "-n", r.Namespace, "exec", vaultPod(r), "--", "vault", "status", "-format=json")
	if err != nil && exec.ExitCode(err) != 2 {
		return st, err
	}
	if jerr := json.Unmarshal(out, &st); jerr != nil {
		return st, fmt.Errorf("vault status: %w", jerr)
	}
	return st, nil
}

// unsealVault initialises the release's Vault once (one key share: an
// appliance has no quorum of key holders on site) and unseals it, on
// every boot: Vault seals itself whenever its pod restarts. The unseal
// key and root token stay on the first control plane (0600), never in a
// log or the journal.
func (in *installer) unsealVault(ctx context.Context, r bundle.LockRelease) error {
	// The pod must run (it is not ready while sealed: its readiness probe
	// is vault status). The key goes on standard input, where vault
	// operator unseal reads it when no argument names it.
	for {
		out, err := in.kubectl(ctx, "-n", r.Namespace, "get", "pod", vaultPod(r), "-o", "jsonpath={.status.phase}")
		if err == nil && strings.TrimSpace(string(out)) == "Running" {
			if _, err := in.vaultStatus(ctx, r); err == nil {
				break
			}
		}
		if err := in.e.sleep(ctx, 3*secondDur); err != nil {
			return fmt.Errorf("vault pod %s in %s is not running", vaultPod(r), r.Namespace)
		}
	}
	st, err := in.vaultStatus(ctx, r)
	if err != nil {
		return err
	}
	var keys vaultInit
	if !st.Initialized {
		c := exec.Command("kubectl", "--kubeconfig", adminConf, "-n", r.Namespace, "exec", vaultPod(r), "--",
			"vault", "operator", "init", "-key-shares=1", "-key-threshold=1", "-format=json")
		c.Secret = true
		out, err := in.e.Host.RunCmd(ctx, c)
		if err != nil {
			return fmt.Errorf("initialising vault: %w", err)
		}
		if err := json.Unmarshal(out, &keys); err != nil || len(keys.UnsealKeys) == 0 {
			return fmt.Errorf("initialising vault: no unseal key in its answer")
		}
		b, _ := json.Marshal(keys)
		if _, err := in.e.Host.WriteFile(vaultFile(r), b, 0o600); err != nil {
			return err
		}
		in.e.Progress.Printf("release %s: Vault initialised; its unseal key and root token are in %s on %s (0600)", r.Name, vaultFile(r), in.e.Node.Name)
	} else {
		b, err := in.e.Host.ReadFile(vaultFile(r))
		if err != nil {
			return fmt.Errorf("vault is initialised but %s is missing: unseal it by hand (vault operator unseal)", vaultFile(r))
		}
		if err := json.Unmarshal(b, &keys); err != nil || len(keys.UnsealKeys) == 0 {
			return fmt.Errorf("%s holds no unseal key", vaultFile(r))
		}
	}
	if !st.Sealed {
		return nil
	}
	for _, k := range keys.UnsealKeys {
		c := exec.Command("kubectl", "--kubeconfig", adminConf, "-n", r.Namespace, "exec", "-i", vaultPod(r), "--",
			"vault", "operator", "unseal", "-format=json")
		c.Stdin = []byte(k)
		c.Secret = true
		if _, err := in.e.Host.RunCmd(ctx, c); err != nil {
			return fmt.Errorf("unsealing vault: %w", err)
		}
	}
	return nil
}

// UnsealVaults unseals the platform's Vault releases that are initialised
// and sealed (their pod restarted since the agent last ran). It does
// nothing on other nodes than the first control plane, and skips a Vault
// whose pod does not answer. `kpaas-agent renew` calls it.
func UnsealVaults(ctx context.Context, e *Env) error {
	if e.Lock.Platform == nil || !e.IsFirstControlPlane() {
		return nil
	}
	in, err := newInstaller(e)
	if err != nil {
		return err
	}
	for _, r := range in.p.Releases {
		if !r.Vault {
			continue
		}
		st, err := in.vaultStatus(ctx, r)
		if err != nil || !st.Initialized || !st.Sealed {
			continue
		}
		if err := in.unsealVault(ctx, r); err != nil {
			return fmt.Errorf("release %s: %w", r.Name, err)
		}
		e.Progress.Printf("release %s: Vault unsealed", r.Name)
	}
	return nil
}
