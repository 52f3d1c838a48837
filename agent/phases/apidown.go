package phases

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// When the API server stops answering a control plane's agent, the
// console is the operator's only window (the appliance has no shell to
// log into). So the agent says how this node's etcd and API server
// containers are: running or exited, how often the kubelet restarted
// them, and the last lines the exited one wrote.

// apiUnreachable reports whether a kubectl error says the API server did
// not answer at all (as opposed to answering no).
func apiUnreachable(msg string) bool {
	for _, s := range []string{"Unable to connect to the server", "connection refused", "was refused", "TLS handshake timeout", "connection reset by peer", "i/o timeout", "signal: killed"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// controlPlaneComponents are the containers whose state explains an API
// server that does not answer.
var controlPlaneComponents = []string{"etcd", "kube-apiserver"}

// controlPlaneState says how this node's etcd and API server containers
// are, one clause each, from the container runtime (never the API). It
// is "" on a node without them or when the runtime does not answer.
func controlPlaneState(ctx context.Context, e *Env) string {
	out, err := e.Host.Run(ctx, "crictl", "ps", "-a", "-o", "json", "--name", "^("+strings.Join(controlPlaneComponents, "|")+")$")
	if err != nil {
		return ""
	}
	var list struct {
		Containers []struct {
			ID       string `json:"id"`
			State    string `json:"state"`
			Created  string `json:"createdAt"`
			Metadata struct {
				Name    string `json:"name"`
				Attempt int    `json:"attempt"`
			} `json:"metadata"`
		} `json:"containers"`
	}
	if json.Unmarshal(out, &list) != nil {
		return ""
	}
	var parts []string
	for _, name := range controlPlaneComponents {
		newest, at := -1, int64(-1)
		for i, c := range list.Containers {
			n, _ := strconv.ParseInt(c.Created, 10, 64)
			if c.Metadata.Name == name && n > at {
				newest, at = i, n
			}
		}
		if newest < 0 {
			parts = append(parts, name+" not started")
			continue
		}
		c := list.Containers[newest]
		state := strings.ToLower(strings.TrimPrefix(c.State, "CONTAINER_"))
		clause := fmt.Sprintf("%s %s (restarted %d times)", name, state, c.Metadata.Attempt)
		if c.State == "CONTAINER_EXITED" {
			clause += exitedHow(ctx, e, c.ID)
		}
		parts = append(parts, clause)
	}
	return strings.Join(parts, "; ")
}

// exitedHow is an exited container's exit code and the last line of its
// log, read from the node's log file.
func exitedHow(ctx context.Context, e *Env, id string) string {
	out, err := e.Host.Run(ctx, "crictl", "inspect", "-o", "json", id)
	if err != nil {
		return ""
	}
	var in struct {
		Status struct {
			ExitCode int    `json:"exitCode"`
			Reason   string `json:"reason"`
			LogPath  string `json:"logPath"`
		} `json:"status"`
	}
	if json.Unmarshal(out, &in) != nil {
		return ""
	}
	s := fmt.Sprintf(", exit code %d", in.Status.ExitCode)
	if in.Status.Reason != "" && in.Status.Reason != "Error" && in.Status.Reason != "Completed" {
		s += " (" + in.Status.Reason + ")"
	}
	if line := lastLogLine(e, in.Status.LogPath); line != "" {
		s += ": " + line
	}
	return s
}

// lastLogLine is the last line of a container's log file (the CRI format:
// time, stream, tag, message), its message only, at most 300 bytes.
func lastLogLine(e *Env, p string) string {
	if p == "" || !filepath.IsAbs(p) {
		return ""
	}
	f, err := os.Open(e.Host.Path(p))
	if err != nil {
		return ""
	}
	defer f.Close()
	const tail = 4096
	if st, err := f.Stat(); err == nil && st.Size() > tail {
		f.Seek(st.Size()-tail, io.SeekStart)
	}
	b, _ := io.ReadAll(io.LimitReader(f, tail))
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	last := lines[len(lines)-1]
	// 2026-12-06T15:40:01.123456789Z stderr F message
	if fields := strings.SplitN(last, " ", 4); len(fields) == 4 {
		last = fields[3]
	}
	if len(last) > 300 {
		last = last[:300] + "…"
	}
	return strings.TrimSpace(last)
}
