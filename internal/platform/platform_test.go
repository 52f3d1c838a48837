package platform_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	cluster "kpaas.dev/appliance/api/cluster/v1alpha1"
	"kpaas.dev/appliance/internal/platform"
)

func TestLevels(t *testing.T) {
	for _, tc := range []struct {
		name string
		ns   []platform.Node
		want string
		err  string
	}{
		{"kpaas order", []platform.Node{
			{"vault", []string{"storage", "ingress"}},
			{"storage", nil},
			{"ingress", nil},
			{"harbor", []string{"storage", "ingress"}},
			{"portal", []string{"harbor", "keycloak", "mariadb"}},
			{"keycloak", []string{"mariadb"}},
			{"mariadb", []string{"storage"}},
		}, "[[ingress storage] [harbor mariadb vault] [keycloak] [portal]]", ""},
		{"unknown", []platform.Node{{"a", []string{"b"}}}, "", `release "a" depends on unknown release "b"`},
		{"cycle", []platform.Node{{"a", []string{"b"}}, {"b", []string{"a"}}, {"c", nil}}, "", "dependency cycle among releases [a b]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := platform.Levels(tc.ns)
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("err = %v, want %s", err, tc.err)
				}
				return
			}
			if err != nil || fmt.Sprint(got) != tc.want {
				t.Fatalf("got %v, %v; want %s", got, err, tc.want)
			}
		})
	}
}

func TestScheduleOrderBoundAndFailures(t *testing.T) {
	ns := []platform.Node{
		{"storage", nil}, {"ingress", nil}, {"net", nil},
		{"vault", []string{"storage", "ingress"}},
		{"mariadb", []string{"storage"}},
		{"keycloak", []string{"mariadb"}},
		{"portal", []string{"keycloak", "vault"}},
	}
	var (
		mu      sync.Mutex
		done    = map[string]bool{}
		running atomic.Int32
		peak    atomic.Int32
	)
	byName := map[string]platform.Node{}
	for _, n := range ns {
		byName[n.Name] = n
	}
	res, err := platform.Schedule(context.Background(), ns, 2, func(ctx context.Context, name string) error {
		r := running.Add(1)
		defer running.Add(-1)
		for {
			p := peak.Load()
			if r <= p || peak.CompareAndSwap(p, r) {
				break
			}
		}
		mu.Lock()
		for _, d := range byName[name].DependsOn {
			if !done[d] {
				t.Errorf("%s started before %s was done", name, d)
			}
		}
		mu.Unlock()
		time.Sleep(5 * time.Millisecond)
		if name == "mariadb" {
			return errors.New("gate failed")
		}
		mu.Lock()
		done[name] = true
		mu.Unlock()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if peak.Load() > 2 {
		t.Errorf("%d releases at once, bound is 2", peak.Load())
	}
	if peak.Load() < 2 {
		t.Errorf("independent releases did not run in parallel")
	}
	for _, n := range []string{"storage", "ingress", "net", "vault"} {
		if res[n] != nil {
			t.Errorf("%s: %v", n, res[n])
		}
	}
	if res["mariadb"] == nil || res["mariadb"].Error() != "gate failed" {
		t.Errorf("mariadb: %v", res["mariadb"])
	}
	for _, n := range []string{"keycloak", "portal"} {
		if !errors.Is(res[n], platform.ErrSkipped) {
			t.Errorf("%s: %v, want skipped", n, res[n])
		}
	}
	if len(res) != len(ns) {
		t.Errorf("%d results for %d releases", len(res), len(ns))
	}
}

func TestFactsAndValues(t *testing.T) {
	c, err := cluster.Parse("site.yaml", []byte(`apiVersion: kpaas.dev/v1alpha1
kind: Cluster
metadata: {name: site}
controlPlaneEndpoint: {host: 10.0.0.11}
nodes:
  - {name: cp1, role: control-plane, address: 10.0.0.11/24}
  - {name: w1, role: worker, address: 10.0.0.21/24}
platform: {storage: nfs, nfsServer: 10.0.0.5}
`))
	if err != nil {
		t.Fatal(err)
	}
	facts := platform.Facts(c, map[string]string{"storageClass": "paasta-cp-storageclass", "nodePort": "30002", "nfsServer": "ignored"})
	for k, v := range map[string]string{
		"clusterName": "site", "controlPlaneEndpoint": "10.0.0.11:6443", "nodeAddresses": "10.0.0.11,10.0.0.21",
		"firstControlPlaneAddress": "10.0.0.11", "nfsServer": "10.0.0.5", "storageClass": "paasta-cp-storageclass", "storage": "nfs",
	} {
		if facts[k] != v {
			t.Errorf("fact %s = %q, want %q", k, facts[k], v)
		}
	}
	lookup := platform.Lookup(facts, map[string]string{"harbor-admin": "s3cret"})
	got, err := platform.ExpandValues(map[string]any{
		"externalURL": "http://${fact:firstControlPlaneAddress}:${fact:nodePort}",
		"port":        "${fact:nodePort}",
		"admin":       "${secret:harbor-admin}",
		"list":        []any{"${fact:storageClass}", int64(3)},
	}, lookup)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"externalURL": "http://10.0.0.11:30002", "port": int64(30002), "admin": "s3cret",
		"list": []any{"paasta-cp-storageclass", int64(3)},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v\nwant %v", got, want)
	}
	_, err = platform.ExpandValues(map[string]any{"a": "${fact:nope}", "b": "${secret:gone}"}, lookup)
	if err == nil || err.Error() != "the site does not give fact:nope, secret:gone" {
		t.Errorf("err = %v", err)
	}
	out, err := platform.Substitute([]byte("server: {NFS_SERVER_PRIVATE_IP}\npath: {NFS_SERVER_PRIVATE_IP}_PATH\n"),
		map[string]string{"{NFS_SERVER_PRIVATE_IP}": "${fact:nfsServer}", "{NFS_SERVER_PRIVATE_IP}_PATH": "/srv/nfs"}, lookup)
	if err != nil || string(out) != "server: 10.0.0.5\npath: /srv/nfs\n" {
		t.Errorf("Substitute = %q, %v", out, err)
	}
	d1, _ := platform.Digest("sha256:abc", map[string]any{"a": 1, "b": 2})
	d2, _ := platform.Digest("sha256:abc", map[string]any{"b": 2, "a": 1})
	d3, _ := platform.Digest("sha256:abd", map[string]any{"a": 1, "b": 2})
	if d1 != d2 || d1 == d3 {
		t.Errorf("digests %s %s %s", d1, d2, d3)
	}
	m := platform.Merge(map[string]any{"a": map[string]any{"x": 1, "y": 2}, "b": 1}, map[string]any{"a": map[string]any{"y": 3}, "c": 4})
	if fmt.Sprint(m) != "map[a:map[x:1 y:3] b:1 c:4]" {
		t.Errorf("Merge = %v", m)
	}
}

func TestSplitAndImages(t *testing.T) {
	objs, err := platform.Decode([]byte(`
apiVersion: v1
kind: ServiceAccount
metadata: {name: sa}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: d, namespace: other}
spec:
  template:
    spec:
      initContainers: [{name: i, image: busybox:1}]
      containers: [{name: c, image: nginx:1.25}, {name: s, image: busybox:1}]
---
---
apiVersion: v1
kind: List
items:
  - apiVersion: batch/v1
    kind: CronJob
    metadata: {name: cj}
    spec: {jobTemplate: {spec: {template: {spec: {containers: [{name: c, image: alpine:3}]}}}}}
`))
	if err != nil {
		t.Fatal(err)
	}
	crds, groups := platform.Split(objs)
	var got []string
	for _, c := range crds {
		got = append(got, "crd "+c.Name())
	}
	for _, g := range groups {
		var names []string
		for _, o := range g.Objects {
			names = append(names, o.Name())
		}
		got = append(got, fmt.Sprintf("ns %q: %s", g.Namespace, strings.Join(names, ",")))
	}
	if want := `[crd widgets.example.com ns "": sa,cj ns "other": d]`; fmt.Sprint(got) != want {
		t.Errorf("Split = %v, want %s", got, want)
	}
	if imgs := platform.Images(objs); fmt.Sprint(imgs) != "[alpine:3 busybox:1 nginx:1.25]" {
		t.Errorf("Images = %v", imgs)
	}
}

func TestInventoryAndDropped(t *testing.T) {
	objs, err := platform.Decode([]byte(`apiVersion: v1
kind: ConfigMap
metadata: {name: a}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: b, namespace: other}
---
apiVersion: v1
kind: Namespace
metadata: {name: other}
---
apiVersion: v1
kind: Secret
metadata: {name: kept, annotations: {helm.sh/resource-policy: keep}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: reader}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.kpaas.dev}
spec: {group: example.kpaas.dev, names: {kind: Widget, plural: widgets}}
`))
	if err != nil {
		t.Fatal(err)
	}
	inv := platform.Inventory(objs, "app")
	want := "rbac.authorization.k8s.io/v1 ClusterRole app reader\nv1 ConfigMap app a\nv1 ConfigMap other b"
	if inv != want {
		t.Fatalf("inventory:\n%s\nwant:\n%s", inv, want)
	}
	// The newer bundle drops b and serves the ClusterRole under another
	// version: only b goes.
	cur := platform.Inventory(objs[:1], "app") + "\nrbac.authorization.k8s.io/v1beta1 ClusterRole app reader"
	var got []string
	for _, o := range platform.Dropped(inv, cur) {
		got = append(got, o.APIVersion()+" "+o.Kind()+" "+o.Namespace()+"/"+o.Name())
	}
	if strings.Join(got, ",") != "v1 ConfigMap other/b" {
		t.Errorf("dropped: %v", got)
	}
	if d := platform.Dropped("", inv); len(d) != 0 {
		t.Errorf("nothing was owned before: %v", d)
	}
}
