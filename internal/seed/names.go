package seed

import (
	"encoding/hex"
	"regexp"
	"strings"
)

// Grammar of the distribution spec and of image references.
var (
	// pathComponent is one slash-separated part of a repository path.
	pathComponent = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$`)
	// domainRE is a registry host with an optional port (no IPv6 literals:
	// the bundle's references do not use them).
	domainRE = regexp.MustCompile(`^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?$`)
	tagRE    = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
)

// maxNameLen is the longest repository name the reference grammar allows.
const maxNameLen = 255

// dockerHub is how the bundle names Docker Hub.
const dockerHub = "docker.io"

// canonicalRegistry folds the aliases of Docker Hub into docker.io.
func canonicalRegistry(r string) string {
	switch strings.ToLower(r) {
	case "docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com":
		return dockerHub
	}
	return r
}

// looksLikeRegistry applies the reference grammar's rule for telling a
// registry from the first path component: it has a dot or a port, or is
// localhost.
func looksLikeRegistry(s string) bool {
	return strings.ContainsAny(s, ".:") || s == "localhost"
}

// validPath reports whether p is a repository path (without registry).
func validPath(p string) bool {
	if p == "" || len(p) > maxNameLen {
		return false
	}
	for _, c := range strings.Split(p, "/") {
		if !pathComponent.MatchString(c) {
			return false
		}
	}
	return true
}

// nameStatus tells why a request's repository name did not resolve.
type nameStatus int

const (
	nameOK         nameStatus = iota
	nameInvalid               // not a repository name
	nameNoRegistry            // names no registry, and there is no fallback
)

// repoName turns the name of a request into the full repository name the
// bundle uses (registry/path). ns is containerd's ns query parameter (the
// upstream registry), fallback the registry for paths that name none ("" to
// refuse them).
func repoName(path, ns, fallback string) (string, nameStatus) {
	if len(path) > maxNameLen {
		return "", nameInvalid
	}
	var registry string
	switch {
	case ns != "":
		if !domainRE.MatchString(ns) {
			return "", nameInvalid
		}
		registry = ns
	default:
		first, rest, found := strings.Cut(path, "/")
		if found && looksLikeRegistry(first) && domainRE.MatchString(first) {
			registry, path = first, rest
		} else {
			registry = fallback
		}
	}
	if !validPath(path) {
		return "", nameInvalid
	}
	if registry == "" {
		return "", nameNoRegistry
	}
	registry = canonicalRegistry(registry)
	if registry == dockerHub && !strings.Contains(path, "/") {
		path = "library/" + path
	}
	return registry + "/" + path, nameOK
}

// digestLengths are the hex lengths of the algorithms a digest may name.
var digestLengths = map[string]int{"sha256": 64, "sha384": 96, "sha512": 128}

// parseDigest checks that s is a well-formed digest of a registered
// algorithm (lowercase hex of the right length). The bundle only holds
// sha256 content, so other algorithms are well-formed but never found.
func parseDigest(s string) (algo, hexPart string, ok bool) {
	algo, hexPart, found := strings.Cut(s, ":")
	if !found {
		return "", "", false
	}
	n, known := digestLengths[algo]
	if !known || len(hexPart) != n || strings.ToLower(hexPart) != hexPart {
		return "", "", false
	}
	if _, err := hex.DecodeString(hexPart); err != nil {
		return "", "", false
	}
	return algo, hexPart, true
}

// isDigestRef tells a manifest reference that is a digest from a tag: tags
// cannot contain a colon.
func isDigestRef(ref string) bool { return strings.Contains(ref, ":") }
