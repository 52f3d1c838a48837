// Package platform is the pure part of installing a bundle's platform:
// the order releases go in (Schedule), the site's facts and secrets put
// into values and manifests (Facts, ExpandValues, Substitute), charts
// rendered from their archive (RenderChart), rendered objects split and
// grouped for applying (Decode, Split), and gates evaluated from the
// objects' JSON (Evaluate, DiagnosePod). It runs no command and touches
// no cluster: kpaas-agent's platform phase does that through its exec
// seam, and the builder uses the same functions to check a bundle.
package platform

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
)

// Node is one release in the dependency graph.
type Node struct {
	Name      string
	DependsOn []string
}

// Levels returns the releases in dependency order, as levels: every
// release of a level depends only on releases of earlier levels; within
// a level, names are sorted. It fails on an unknown dependency or a cycle.
func Levels(ns []Node) ([][]string, error) {
	deps := map[string][]string{}
	for _, n := range ns {
		deps[n.Name] = n.DependsOn
	}
	for _, n := range ns {
		for _, d := range n.DependsOn {
			if _, ok := deps[d]; !ok {
				return nil, fmt.Errorf("release %q depends on unknown release %q", n.Name, d)
			}
		}
	}
	done := map[string]bool{}
	var out [][]string
	for len(done) < len(ns) {
		var level []string
		for _, n := range ns {
			if done[n.Name] {
				continue
			}
			ready := true
			for _, d := range n.DependsOn {
				ready = ready && done[d]
			}
			if ready {
				level = append(level, n.Name)
			}
		}
		if len(level) == 0 {
			var left []string
			for _, n := range ns {
				if !done[n.Name] {
					left = append(left, n.Name)
				}
			}
			sort.Strings(left)
			return nil, fmt.Errorf("dependency cycle among releases %v", left)
		}
		sort.Strings(level)
		for _, n := range level {
			done[n] = true
		}
		out = append(out, level)
	}
	return out, nil
}

// ErrSkipped is the error of a release that was not installed because a
// release it depends on failed.
var ErrSkipped = errors.New("skipped")

// Schedule runs install for every release, each once every release it
// depends on has succeeded, at most parallel at a time (at least 1), and
// returns each release's error (nil for success). A release whose
// dependency failed is not run: its error wraps ErrSkipped. Cancelling
// ctx stops starting releases; those not started get ctx's error.
func Schedule(ctx context.Context, ns []Node, parallel int, install func(ctx context.Context, name string) error) (map[string]error, error) {
	if _, err := Levels(ns); err != nil {
		return nil, err
	}
	if parallel < 1 {
		parallel = 1
	}
	var (
		mu      sync.Mutex
		results = map[string]error{}
		started = map[string]bool{}
		wg      sync.WaitGroup
		sem     = make(chan struct{}, parallel)
		wake    = make(chan struct{}, len(ns)+1)
	)
	for {
		mu.Lock()
		var ready []Node
		for _, n := range ns {
			if started[n.Name] {
				continue
			}
			ok, skip := true, ""
			for _, d := range n.DependsOn {
				err, finished := results[d]
				switch {
				case !finished:
					ok = false
				case err != nil:
					skip = d
				}
			}
			if skip != "" {
				started[n.Name] = true
				results[n.Name] = fmt.Errorf("%w: release %q failed", ErrSkipped, skip)
				wake <- struct{}{}
				continue
			}
			if ok {
				ready = append(ready, n)
			}
		}
		if len(results) == len(ns) {
			mu.Unlock()
			break
		}
		for _, n := range ready {
			started[n.Name] = true
		}
		mu.Unlock()
		for _, n := range ready {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
			}
			if ctx.Err() != nil {
				mu.Lock()
				results[n.Name] = ctx.Err()
				mu.Unlock()
				continue
			}
			wg.Add(1)
			go func(name string) {
				defer wg.Done()
				err := install(ctx, name)
				<-sem
				mu.Lock()
				results[name] = err
				mu.Unlock()
				wake <- struct{}{}
			}(n.Name)
		}
		mu.Lock()
		finished := len(results) == len(ns)
		mu.Unlock()
		if finished {
			break
		}
		if len(ready) == 0 {
			<-wake
		}
	}
	wg.Wait()
	return results, nil
}
