package platform

import (
	"fmt"
	"sort"
	"strings"
)

// Gated reports whether the default gate looks at objects of o's kind:
// Deployments, StatefulSets and DaemonSets (rolled out), Jobs
// (complete), CRDs (established) and PVCs (bound).
func Gated(o Object) bool {
	switch o.Kind() {
	case "Deployment", "StatefulSet", "DaemonSet", "Job", "PersistentVolumeClaim":
		return true
	}
	return o.IsCRD()
}

// Evaluate reports whether o, as the API server returns it (with status),
// passes the default gate, and when not, why, in words an operator can
// act on. Objects of kinds the gate does not look at pass.
func Evaluate(o Object) (ok bool, reason string) {
	st, _ := o["status"].(map[string]any)
	spec, _ := o["spec"].(map[string]any)
	gen := num(o.meta()["generation"])
	observed := num(st["observedGeneration"])
	stale := st != nil && observed < gen
	switch {
	case o.IsCRD():
		if cond(st, "Established") == "True" {
			return true, ""
		}
		return false, "not established yet"
	case o.Kind() == "Deployment":
		want := int64(1)
		if r, ok := spec["replicas"]; ok {
			want = num(r)
		}
		switch {
		case stale:
			return false, "rollout not observed yet"
		case num(st["updatedReplicas"]) < want:
			return false, fmt.Sprintf("%d of %d replicas updated", num(st["updatedReplicas"]), want)
		case num(st["availableReplicas"]) < want:
			return false, fmt.Sprintf("%d of %d replicas available", num(st["availableReplicas"]), want)
		}
		if m := condMessage(st, "Progressing", "False"); m != "" {
			return false, m
		}
		return true, ""
	case o.Kind() == "StatefulSet":
		want := int64(1)
		if r, ok := spec["replicas"]; ok {
			want = num(r)
		}
		switch {
		case stale:
			return false, "rollout not observed yet"
		case num(st["readyReplicas"]) < want:
			return false, fmt.Sprintf("%d of %d replicas ready", num(st["readyReplicas"]), want)
		case num(st["updatedReplicas"]) < want && st["updateRevision"] != st["currentRevision"]:
			return false, fmt.Sprintf("%d of %d replicas updated", num(st["updatedReplicas"]), want)
		}
		return true, ""
	case o.Kind() == "DaemonSet":
		want := num(st["desiredNumberScheduled"])
		switch {
		case stale || st == nil:
			return false, "rollout not observed yet"
		case num(st["updatedNumberScheduled"]) < want:
			return false, fmt.Sprintf("%d of %d pods updated", num(st["updatedNumberScheduled"]), want)
		case num(st["numberAvailable"]) < want:
			return false, fmt.Sprintf("%d of %d pods available", num(st["numberAvailable"]), want)
		}
		return true, ""
	case o.Kind() == "Job":
		if cond(st, "Complete") == "True" {
			return true, ""
		}
		if m := condMessage(st, "Failed", "True"); m != "" {
			return false, "failed: " + m
		}
		return false, fmt.Sprintf("not complete (%d active, %d failed)", num(st["active"]), num(st["failed"]))
	case o.Kind() == "PersistentVolumeClaim":
		if p, _ := st["phase"].(string); p == "Bound" {
			return true, ""
		}
		p, _ := st["phase"].(string)
		return false, "not bound (" + strings.ToLower(cmpOr(p, "Pending")) + ")"
	}
	return true, ""
}

// Failed reports whether o's state will not get better by waiting (a Job
// whose backoff limit is reached), so the installer stops waiting.
func Failed(o Object) bool {
	st, _ := o["status"].(map[string]any)
	return o.Kind() == "Job" && cond(st, "Failed") == "True"
}

// Selects reports whether the workload o's pod selector (matchLabels)
// selects pod p in the same namespace.
func Selects(o, p Object) bool {
	if o.Namespace() != p.Namespace() && o.Namespace() != "" {
		return false
	}
	spec, _ := o["spec"].(map[string]any)
	sel, _ := spec["selector"].(map[string]any)
	ml, _ := sel["matchLabels"].(map[string]any)
	if o.Kind() == "Job" {
		// Jobs select their pods by the job-name label.
		ml = map[string]any{"job-name": o.Name()}
	}
	if len(ml) == 0 {
		return false
	}
	labels, _ := p.meta()["labels"].(map[string]any)
	for k, v := range ml {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// PodProblem is what keeps a pod from running, for an operator.
type PodProblem struct {
	Pod       string
	Container string // the container at fault, when one is
	// Reason: ImagePullBackOff, ErrImagePull, CrashLoopBackOff, Pending, …
	Reason  string
	Message string
	Image   string
}

func (p PodProblem) String() string {
	s := "pod " + p.Pod
	if p.Container != "" {
		s += " container " + p.Container
	}
	s += ": " + p.Reason
	if p.Image != "" {
		s += " (image " + p.Image + ")"
	}
	if p.Message != "" {
		s += ": " + p.Message
	}
	return s
}

// DiagnosePod returns what is wrong with pod p, or ok when it is running
// and ready (or completed). A pending pod names the scheduler's message; a
// waiting container its reason and image.
func DiagnosePod(p Object) (PodProblem, bool) {
	st, _ := p["status"].(map[string]any)
	phase, _ := st["phase"].(string)
	pr := PodProblem{Pod: p.Name()}
	statuses := list(st["initContainerStatuses"])
	statuses = append(statuses, list(st["containerStatuses"])...)
	for _, cs := range statuses {
		c, _ := cs.(map[string]any)
		state, _ := c["state"].(map[string]any)
		if w, ok := state["waiting"].(map[string]any); ok {
			reason, _ := w["reason"].(string)
			if reason == "" || reason == "ContainerCreating" || reason == "PodInitializing" {
				continue
			}
			pr.Container, _ = c["name"].(string)
			pr.Image, _ = c["image"].(string)
			pr.Reason = reason
			pr.Message, _ = w["message"].(string)
			if reason == "CrashLoopBackOff" {
				pr.Message = lastTermination(c)
			}
			return pr, false
		}
		if t, ok := state["terminated"].(map[string]any); ok && num(t["exitCode"]) != 0 && phase != "Succeeded" {
			pr.Container, _ = c["name"].(string)
			pr.Image, _ = c["image"].(string)
			pr.Reason, _ = t["reason"].(string)
			pr.Reason = cmpOr(pr.Reason, "Error")
			pr.Message = fmt.Sprintf("exit code %d", num(t["exitCode"]))
			return pr, false
		}
	}
	switch phase {
	case "Succeeded":
		return pr, true
	case "Failed":
		pr.Reason = "Failed"
		pr.Message, _ = st["message"].(string)
		return pr, false
	case "Pending", "":
		pr.Reason = "Pending"
		if m := condMessage(st, "PodScheduled", "False"); m != "" {
			pr.Message = m
		} else if cond(st, "PodScheduled") != "True" {
			pr.Message = "not scheduled yet"
		} else {
			pr.Message = "scheduled, containers starting"
		}
		return pr, false
	}
	if cond(st, "Ready") != "True" {
		pr.Reason = "NotReady"
		pr.Message = cmpOr(condMessage(st, "Ready", "False"), "running, not ready")
		return pr, false
	}
	return pr, true
}

func lastTermination(c map[string]any) string {
	ls, _ := c["lastState"].(map[string]any)
	t, _ := ls["terminated"].(map[string]any)
	if t == nil {
		return ""
	}
	r, _ := t["reason"].(string)
	return fmt.Sprintf("last exit code %d (%s), restarted %d times", num(t["exitCode"]), cmpOr(r, "Error"), num(c["restartCount"]))
}

// cond is the status of the condition of type t ("" when absent).
func cond(st map[string]any, t string) string {
	for _, c := range list(st["conditions"]) {
		m, _ := c.(map[string]any)
		if m["type"] == t {
			s, _ := m["status"].(string)
			return s
		}
	}
	return ""
}

// condMessage is the reason and message of condition t when its status is
// status, "" otherwise.
func condMessage(st map[string]any, t, status string) string {
	for _, c := range list(st["conditions"]) {
		m, _ := c.(map[string]any)
		if m["type"] == t && m["status"] == status {
			r, _ := m["reason"].(string)
			msg, _ := m["message"].(string)
			switch {
			case r != "" && msg != "":
				return r + ": " + msg
			case msg != "":
				return msg
			}
			return cmpOr(r, t+" "+status)
		}
	}
	return ""
}

func list(v any) []any { l, _ := v.([]any); return l }

func num(v any) int64 {
	switch v := v.(type) {
	case float64:
		return int64(v)
	case int64:
		return v
	case int:
		return int64(v)
	}
	return 0
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// Summary joins reasons for a failed gate, sorted, one per line.
func Summary(reasons []string) string {
	sort.Strings(reasons)
	return strings.Join(reasons, "\n")
}
