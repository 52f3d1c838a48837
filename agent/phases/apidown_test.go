package phases

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"kpaas.dev/appliance/agent/host"
	"kpaas.dev/appliance/internal/exec/exectest"
)

// An API server in a crash loop because etcd does not answer: the
// console line names both containers, the restarts, the exit code and
// the last line the API server wrote.
func TestControlPlaneState(t *testing.T) {
	root := t.TempDir()
	f := &exectest.Fake{}
	e := &Env{Host: &host.Host{Root: root, Exec: f}}
	f.Reply("crictl ps -a -o json --name ", exectest.Response{Stdout: `{"containers":[
	  {"id":"a1","state":"CONTAINER_EXITED","createdAt":"1765000000000000000","metadata":{"name":"kube-apiserver","attempt":6}},
	  {"id":"e0","state":"CONTAINER_RUNNING","createdAt":"1764990000000000000","metadata":{"name":"etcd","attempt":0}},
	  {"id":"a2","state":"CONTAINER_EXITED","createdAt":"1765000300000000000","metadata":{"name":"kube-apiserver","attempt":7}}]}`})
	logPath := "/var/log/pods/kube-system_kube-apiserver-cp1_1/kube-apiserver/7.log"
	f.Reply("crictl inspect -o json a2", exectest.Response{Stdout: `{"status":{"exitCode":1,"reason":"Error","logPath":"` + logPath + `"}}`})
	if err := os.MkdirAll(filepath.Dir(filepath.Join(root, logPath)), 0o755); err != nil {
		t.Fatal(err)
	}
	log := "2026-12-06T15:40:01.1Z stderr F I1206 15:40:01 server.go:150] Version: v1.35.4\n" +
		"2026-12-06T15:40:21.2Z stderr F E1206 15:40:21 run.go:72] \"command failed\" err=\"context deadline exceeded\"\n"
	if err := os.WriteFile(filepath.Join(root, logPath), []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	got := controlPlaneState(context.Background(), e)
	want := `etcd running (restarted 0 times); kube-apiserver exited (restarted 7 times), exit code 1: E1206 15:40:21 run.go:72] "command failed" err="context deadline exceeded"`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	// No runtime answer: nothing said.
	f.Reply("crictl ps", exectest.Response{ExitCode: 1, Stderr: "connect: no such file or directory"})
	if got := controlPlaneState(context.Background(), e); got != "" {
		t.Errorf("without a runtime: %q", got)
	}
}

func TestAPIUnreachable(t *testing.T) {
	for msg, want := range map[string]bool{
		"kubectl --kubeconfig /etc/kubernetes/admin.conf get -f - -o json: exit status 1: Unable to connect to the server: net/http: TLS handshake timeout": true,
		"The connection to the server 10.42.0.11:6443 was refused - did you specify the right host or port?":                                                true,
		"dial tcp 10.42.0.11:6443: connect: connection refused":                                                                                             true,
		"Deployment/cp-harbor-core in harbor: 0 of 1 replicas available":                                                                                    false,
	} {
		if got := apiUnreachable(msg); got != want {
			t.Errorf("apiUnreachable(%q) = %v", msg, got)
		}
	}
}
