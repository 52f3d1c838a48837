package platform_test

import (
	"testing"

	"kpaas.dev/appliance/internal/platform"
)

func obj(t *testing.T, y string) platform.Object {
	t.Helper()
	objs, err := platform.Decode([]byte(y))
	if err != nil || len(objs) != 1 {
		t.Fatalf("decode: %v %v", objs, err)
	}
	return objs[0]
}

func TestEvaluate(t *testing.T) {
	for _, tc := range []struct {
		name, obj string
		ok        bool
		reason    string
	}{
		{"deployment rolled out", `{kind: Deployment, metadata: {name: d, generation: 2}, spec: {replicas: 2},
			status: {observedGeneration: 2, updatedReplicas: 2, availableReplicas: 2}}`, true, ""},
		{"deployment stale", `{kind: Deployment, metadata: {name: d, generation: 3}, spec: {replicas: 2},
			status: {observedGeneration: 2, updatedReplicas: 2, availableReplicas: 2}}`, false, "rollout not observed yet"},
		{"deployment unavailable", `{kind: Deployment, metadata: {name: d, generation: 1}, spec: {replicas: 3},
			status: {observedGeneration: 1, updatedReplicas: 3, availableReplicas: 1}}`, false, "1 of 3 replicas available"},
		{"deployment default replicas", `{kind: Deployment, metadata: {name: d, generation: 1}, spec: {},
			status: {observedGeneration: 1}}`, false, "0 of 1 replicas updated"},
		{"deployment deadline", `{kind: Deployment, metadata: {name: d, generation: 1}, spec: {replicas: 0},
			status: {observedGeneration: 1, conditions: [{type: Progressing, status: "False", reason: ProgressDeadlineExceeded, message: "ReplicaSet d-1 has timed out progressing."}]}}`,
			false, "ProgressDeadlineExceeded: ReplicaSet d-1 has timed out progressing."},
		{"statefulset ready", `{kind: StatefulSet, metadata: {name: s, generation: 1}, spec: {replicas: 1},
			status: {observedGeneration: 1, readyReplicas: 1, updatedReplicas: 1, currentRevision: a, updateRevision: a}}`, true, ""},
		{"statefulset not ready", `{kind: StatefulSet, metadata: {name: s, generation: 1}, spec: {replicas: 1},
			status: {observedGeneration: 1, replicas: 1}}`, false, "0 of 1 replicas ready"},
		{"daemonset", `{kind: DaemonSet, metadata: {name: ds, generation: 1},
			status: {observedGeneration: 1, desiredNumberScheduled: 2, updatedNumberScheduled: 2, numberAvailable: 1}}`, false, "1 of 2 pods available"},
		{"daemonset no status", `{kind: DaemonSet, metadata: {name: ds, generation: 1}}`, false, "rollout not observed yet"},
		{"job complete", `{kind: Job, metadata: {name: j}, status: {conditions: [{type: Complete, status: "True"}]}}`, true, ""},
		{"job failed", `{kind: Job, metadata: {name: j}, status: {failed: 7, conditions: [{type: Failed, status: "True", reason: BackoffLimitExceeded, message: Job has reached the specified backoff limit}]}}`,
			false, "failed: BackoffLimitExceeded: Job has reached the specified backoff limit"},
		{"job running", `{kind: Job, metadata: {name: j}, status: {active: 1}}`, false, "not complete (1 active, 0 failed)"},
		{"crd", `{apiVersion: apiextensions.k8s.io/v1, kind: CustomResourceDefinition, metadata: {name: c},
			status: {conditions: [{type: NamesAccepted, status: "True"}, {type: Established, status: "True"}]}}`, true, ""},
		{"crd pending", `{apiVersion: apiextensions.k8s.io/v1, kind: CustomResourceDefinition, metadata: {name: c}}`, false, "not established yet"},
		{"pvc bound", `{kind: PersistentVolumeClaim, metadata: {name: p}, status: {phase: Bound}}`, true, ""},
		{"pvc pending", `{kind: PersistentVolumeClaim, metadata: {name: p}, status: {phase: Pending}}`, false, "not bound (pending)"},
		{"configmap", `{kind: ConfigMap, metadata: {name: c}}`, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ok, reason := platform.Evaluate(obj(t, tc.obj))
			if ok != tc.ok || reason != tc.reason {
				t.Errorf("Evaluate = %v %q, want %v %q", ok, reason, tc.ok, tc.reason)
			}
		})
	}
}

func TestDiagnosePod(t *testing.T) {
	for _, tc := range []struct {
		name, pod string
		ok        bool
		want      string
	}{
		{"image pull", `{kind: Pod, metadata: {name: harbor-core-0}, status: {phase: Pending,
			conditions: [{type: PodScheduled, status: "True"}],
			containerStatuses: [{name: core, image: goharbor/harbor-core:v2.7.0, state: {waiting: {reason: ImagePullBackOff, message: "Back-off pulling image \"goharbor/harbor-core:v2.7.0\""}}}]}}`,
			false, `pod harbor-core-0 container core: ImagePullBackOff (image goharbor/harbor-core:v2.7.0): Back-off pulling image "goharbor/harbor-core:v2.7.0"`},
		{"crash loop", `{kind: Pod, metadata: {name: db-0}, status: {phase: Running,
			containerStatuses: [{name: mariadb, image: mariadb:10, restartCount: 4, state: {waiting: {reason: CrashLoopBackOff}},
			  lastState: {terminated: {exitCode: 1, reason: Error}}}]}}`,
			false, "pod db-0 container mariadb: CrashLoopBackOff (image mariadb:10): last exit code 1 (Error), restarted 4 times"},
		{"unschedulable", `{kind: Pod, metadata: {name: p}, status: {phase: Pending,
			conditions: [{type: PodScheduled, status: "False", reason: Unschedulable, message: "0/1 nodes are available: 1 node(s) had untolerated taint."}]}}`,
			false, "pod p: Pending: Unschedulable: 0/1 nodes are available: 1 node(s) had untolerated taint."},
		{"no scheduler", `{kind: Pod, metadata: {name: p}, status: {phase: Pending}}`, false, "pod p: Pending: not scheduled yet"},
		{"not ready", `{kind: Pod, metadata: {name: p}, status: {phase: Running,
			conditions: [{type: Ready, status: "False", reason: ContainersNotReady, message: "containers with unready status: [vault]"}],
			containerStatuses: [{name: vault, state: {running: {}}}]}}`, false, "pod p: NotReady: ContainersNotReady: containers with unready status: [vault]"},
		{"running", `{kind: Pod, metadata: {name: p}, status: {phase: Running, conditions: [{type: Ready, status: "True"}]}}`, true, ""},
		{"succeeded", `{kind: Pod, metadata: {name: p}, status: {phase: Succeeded}}`, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pr, ok := platform.DiagnosePod(obj(t, tc.pod))
			if ok != tc.ok || (!ok && pr.String() != tc.want) {
				t.Errorf("DiagnosePod = %v %q\nwant %v %q", ok, pr.String(), tc.ok, tc.want)
			}
		})
	}
}

func TestSelects(t *testing.T) {
	d := obj(t, `{kind: Deployment, metadata: {name: d, namespace: a}, spec: {selector: {matchLabels: {app: web}}}}`)
	j := obj(t, `{kind: Job, metadata: {name: migrate, namespace: a}}`)
	for _, tc := range []struct {
		w    platform.Object
		pod  string
		want bool
	}{
		{d, `{kind: Pod, metadata: {name: p, namespace: a, labels: {app: web, x: y}}}`, true},
		{d, `{kind: Pod, metadata: {name: p, namespace: b, labels: {app: web}}}`, false},
		{d, `{kind: Pod, metadata: {name: p, namespace: a, labels: {app: db}}}`, false},
		{j, `{kind: Pod, metadata: {name: p, namespace: a, labels: {job-name: migrate}}}`, true},
	} {
		if got := platform.Selects(tc.w, obj(t, tc.pod)); got != tc.want {
			t.Errorf("Selects(%s, %s) = %v", tc.w.Name(), tc.pod, got)
		}
	}
}

func TestCRDStateAndTypeKey(t *testing.T) {
	crd := obj(t, `{apiVersion: apiextensions.k8s.io/v1, kind: CustomResourceDefinition, metadata: {name: inferenceservices.serving.kserve.io},
		spec: {group: serving.kserve.io, names: {kind: InferenceService}},
		status: {conditions: [{type: Established, status: "False", reason: InvalidCABundle, message: The conversion webhook CABundle is invalid}]}}`)
	if ok, ca := platform.CRDState(crd); ok || !ca {
		t.Errorf("CRDState = %v %v, want not established, waiting for its CA", ok, ca)
	}
	if got := crd.TypeKey(); got != "serving.kserve.io/InferenceService" {
		t.Errorf("TypeKey = %s", got)
	}
	cr := obj(t, `{apiVersion: serving.kserve.io/v1beta1, kind: InferenceService, metadata: {name: x}}`)
	if cr.TypeKey() != crd.TypeKey() {
		t.Errorf("resource %s, CRD %s", cr.TypeKey(), crd.TypeKey())
	}
	if k := obj(t, `{apiVersion: v1, kind: ConfigMap, metadata: {name: c}}`).TypeKey(); k != "/ConfigMap" {
		t.Errorf("core TypeKey = %s", k)
	}
	pending := obj(t, `{apiVersion: apiextensions.k8s.io/v1, kind: CustomResourceDefinition, metadata: {name: c}}`)
	if ok, ca := platform.CRDState(pending); ok || ca {
		t.Errorf("a new CRD: %v %v", ok, ca)
	}
}
