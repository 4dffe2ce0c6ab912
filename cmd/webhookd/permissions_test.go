package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// readmePermissions returns the authorization block README.md documents
// under "NATS permissions", so that the test runs what users copy.
func readmePermissions(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(raw), "**NATS permissions.**")
	if !ok {
		t.Fatal("README has no NATS permissions paragraph")
	}
	_, block, ok := strings.Cut(after, "```\n")
	if !ok {
		t.Fatal("README's NATS permissions paragraph has no code block")
	}
	block, _, _ = strings.Cut(block, "```")
	return block
}

// TestDocumentedPermissions: webhookd runs on a nats-server configured
// with exactly the README's permissions (register, fan out, deliver, share
// health and failures), a publisher with the publisher's permissions can
// publish events but cannot plant a registry entry.
func TestDocumentedPermissions(t *testing.T) {
	if testing.Short() {
		t.Skip("real nats-server and daemon")
	}
	port := freePort(t)
	dir := t.TempDir()
	conf := fmt.Sprintf("listen: 127.0.0.1:%d\njetstream { store_dir: %q }\n%s", port, filepath.Join(dir, "js"), readmePermissions(t))
	confPath := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	ns := exec.Command(natsServerBinary(t), "-c", confPath)
	ns.Env = append(os.Environ(), "WEBHOOKD_PASS=wh-secret-pass", "PUBLISHER_PASS=pub-secret-pass")
	out := &syncBuffer{}
	ns.Stdout, ns.Stderr = out, out
	if err := ns.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ns.Process.Kill(); _ = ns.Wait() })
	waitUntil(t, 20*time.Second, "nats-server listening", func() bool { return dialOK(fmt.Sprintf("127.0.0.1:%d", port)) })

	d := newDaemon(t, "--nats-user", "webhookd", "--retry-max-attempts", "1")
	d.env = append(d.env, "WEBHOOKD_NATS_PASSWORD=wh-secret-pass")
	d.externalNATS = fmt.Sprintf("nats://127.0.0.1:%d", port)
	d.start()

	l := newLedger()
	recv := httptest.NewServer(http.HandlerFunc(l.handler))
	defer recv.Close()
	since := time.Now().UTC().Add(-time.Second)
	first := subscribeAt(t, d, l, recv.URL, "/sub-0")
	subscribeAt(t, d, l, recv.URL, "/sub-1")
	// A receiver that fails, so the failures stream and the delivery log
	// are written under these permissions too.
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
	}))
	defer failing.Close()
	broken, _ := d.register(failing.URL, "workflowRun.completed", "")

	pub, err := nats.Connect(d.externalNATS, nats.UserInfo("publisher", "pub-secret-pass"))
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	js, _ := jetstream.New(pub)
	const events = 50
	for i := range events {
		body := fmt.Sprintf(`{"type":"workflowRun.completed","workflowId":"WF","workflowRunId":"run-%d"}`, i)
		if _, err := js.Publish(t.Context(), "events.acme.workflowRun.completed", []byte(body), jetstream.WithMsgID(fmt.Sprintf("run-%d", i))); err != nil {
			t.Fatalf("publisher's acked publish: %v\nnats-server: %s", err, tail(out.String(), 2000))
		}
	}
	waitUntil(t, 60*time.Second, "every delivery", func() bool { return l.unique() >= events*2 })

	// Failure records and a retry of one (the failures stream), and a
	// replay (the replays bucket) work under the same permissions.
	var failures []failureRecord
	waitUntil(t, 30*time.Second, "failure records", func() bool { failures = d.failures(broken); return len(failures) > 0 })
	status, body := d.api(http.MethodGet, "/api/webhook/"+broken+"/deliveries?status=failed&limit=1", nil)
	var dl struct{ Data []struct{ ID string } }
	if err := json.Unmarshal(body, &dl); status != 200 || err != nil || len(dl.Data) != 1 {
		t.Fatalf("failed deliveries: %d %s", status, body)
	}
	if status, body := d.api(http.MethodPost, "/api/webhook/"+broken+"/deliveries/"+dl.Data[0].ID+"/retry", nil); status != http.StatusAccepted {
		t.Fatalf("retry: %d %s", status, body)
	}
	req := fmt.Sprintf(`{"since":%q,"until":%q}`, since.Format(time.RFC3339), time.Now().UTC().Add(time.Second).Format(time.RFC3339))
	status, body = d.api(http.MethodPost, "/api/webhook/"+first+"/replay", []byte(req))
	if status != http.StatusAccepted {
		t.Fatalf("replay: %d %s\nnats-server: %s", status, body, tail(out.String(), 2000))
	}
	var job struct{ Data struct{ ID string } }
	_ = json.Unmarshal(body, &job)
	waitUntil(t, 60*time.Second, "the replay to finish and re-deliver", func() bool {
		status, body := d.api(http.MethodGet, "/api/replays/"+job.Data.ID, nil)
		var env struct{ Data struct{ State string } }
		_ = json.Unmarshal(body, &env)
		l.mu.Lock()
		total := l.total
		l.mu.Unlock()
		return status == 200 && env.Data.State == "succeeded" && total >= 3*events
	})
	if strings.Contains(out.String(), "Permissions Violation") && strings.Contains(out.String(), "webhookd") {
		t.Errorf("nats-server reports a permissions violation of the webhookd user:\n%s", tail(out.String(), 2000))
	}

	// The publisher may not write the registry, with or without JetStream.
	errs := make(chan error, 1)
	pub.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err })
	if err := pub.Publish("$KV.WEBHOOKD_REGISTRY.wh_00000000000000000000000000", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errs:
		if !strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
			t.Fatalf("publishing into the registry: %v, want a permissions violation", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the publisher wrote into the registry bucket without a permissions violation")
	}
	l.check(t)
}
