//go:build !linux

package kubetest

// unmountUnder has nothing to do where no node runs (WithNode needs Linux).
func unmountUnder(string) error { return nil }
