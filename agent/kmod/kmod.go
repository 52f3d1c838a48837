// Package kmod reads the kernel's module dependency data (modules.dep and
// modules.builtin, as written by depmod) and orders modules for loading.
// It is pure: the builder uses it to pick the modules an initramfs carries,
// kpaas-init to load them in dependency order.
package kmod

import (
	"bufio"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
)

// Module is one loadable module.
type Module struct {
	Name string   // normalised: underscores, no extension (virtio_blk)
	Path string   // relative to the modules directory (kernel/drivers/…/virtio_blk.ko)
	Deps []string // names of the modules it needs, as depmod lists them
}

// Index is the content of modules.dep and modules.builtin.
type Index struct {
	Modules map[string]*Module
	Builtin map[string]bool
}

// Name normalises a module's name or file name: "crc32c-intel",
// "crc32c_intel.ko" and "kernel/arch/x86/crypto/crc32c-intel.ko.xz" all
// become "crc32c_intel".
func Name(s string) string {
	s = path.Base(s)
	for _, ext := range []string{".xz", ".gz", ".zst"} {
		s = strings.TrimSuffix(s, ext)
	}
	s = strings.TrimSuffix(s, ".ko")
	return strings.ReplaceAll(s, "-", "_")
}

// ParseDep reads modules.dep ("path: dep dep …" per line).
func ParseDep(r io.Reader) (*Index, error) {
	ix := &Index{Modules: map[string]*Module{}, Builtin: map[string]bool{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		p, deps, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(p) == "" {
			return nil, fmt.Errorf("modules.dep line %d: no \"path:\" in %q", n, line)
		}
		m := &Module{Name: Name(p), Path: strings.TrimSpace(p)}
		for _, d := range strings.Fields(deps) {
			m.Deps = append(m.Deps, Name(d))
		}
		ix.Modules[m.Name] = m
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading modules.dep: %w", err)
	}
	return ix, nil
}

// ParseBuiltin adds modules.builtin (one path per line) to ix.
func (ix *Index) ParseBuiltin(r io.Reader) error {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			ix.Builtin[Name(l)] = true
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("reading modules.builtin: %w", err)
	}
	return nil
}

// NotFoundError lists modules that are neither loadable nor built in.
type NotFoundError struct{ Names []string }

func (e *NotFoundError) Error() string {
	return "kernel modules not found: " + strings.Join(e.Names, ", ")
}

// Order returns the loadable modules that names need, each after all of
// its dependencies, each once. Built-in modules are skipped. Unknown names
// are collected in a *NotFoundError returned with the modules that were
// found, so a caller can load what exists and report the rest.
func (ix *Index) Order(names []string) ([]*Module, error) {
	var out []*Module
	state := map[string]int{} // 1 visiting, 2 done
	var missing []string
	var visit func(name string, stack []string) error
	visit = func(name string, stack []string) error {
		switch state[name] {
		case 2:
			return nil
		case 1:
			return fmt.Errorf("module dependency cycle: %s -> %s", strings.Join(stack, " -> "), name)
		}
		m, ok := ix.Modules[name]
		if !ok {
			state[name] = 2
			if !ix.Builtin[name] {
				missing = append(missing, name)
			}
			return nil
		}
		state[name] = 1
		for _, d := range m.Deps {
			if err := visit(d, append(stack, name)); err != nil {
				return err
			}
		}
		state[name] = 2
		out = append(out, m)
		return nil
	}
	for _, n := range names {
		if err := visit(Name(n), nil); err != nil {
			return nil, err
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return out, &NotFoundError{Names: missing}
	}
	return out, nil
}

// FormatDep writes modules.dep lines for mods (paths as given), in the
// order given: what an initramfs carries for the modules it holds.
func FormatDep(w io.Writer, mods []*Module, ix *Index) error {
	for _, m := range mods {
		deps := make([]string, 0, len(m.Deps))
		for _, d := range m.Deps {
			if dm, ok := ix.Modules[d]; ok {
				deps = append(deps, dm.Path)
			}
		}
		line := m.Path + ":"
		if len(deps) > 0 {
			line += " " + strings.Join(deps, " ")
		}
		if _, err := fmt.Fprintln(w, line); err != nil {
			return err
		}
	}
	return nil
}
