package api

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/webhookd/webhookd/events"
	"github.com/webhookd/webhookd/events/natstest"
	"github.com/webhookd/webhookd/registry"
	"github.com/webhookd/webhookd/registry/failurelog"
)

// queueRedeliverer stands in for the dispatcher: it keeps what it was given.
type queueRedeliverer struct {
	mu     sync.Mutex
	queued []registry.Failure
	err    error
}

func (q *queueRedeliverer) Redeliver(_ context.Context, f registry.Failure) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err != nil {
		return q.err
	}
	q.queued = append(q.queued, f)
	return nil
}

func recordFailure(t *testing.T, e *testEnv, webhookID, failureID string) registry.Failure {
	t.Helper()
	now := time.Now().UTC().Truncate(time.Second)
	f := registry.Failure{
		ID: failureID, WebhookID: webhookID, Workspace: wsAcme, EventID: "ev-" + failureID,
		EventType: events.WorkflowRunCompleted, Subject: "events.acme.workflowRun.completed",
		Attempts: 7, LastStatus: 503, LastError: "503 Service Unavailable", Reason: "max_attempts",
		FirstAttemptAt: now.Add(-time.Hour), LastAttemptAt: now,
		Body: []byte(`{"type":"workflowRun.completed","workflowId":"WFCG-1"}`),
	}
	if err := e.store.RecordFailure(context.Background(), f); err != nil {
		t.Fatalf("record failure: %v", err)
	}
	return f
}

func TestFailuresListAndRetry(t *testing.T) {
	q := &queueRedeliverer{}
	e := newTestEnv(t, func(c *Config) { c.Redeliver = q })
	id := e.mustCreate(keyAcme, validBody)["id"].(string)
	want := recordFailure(t, e, id, "msg_one")

	list := e.do("GET", "/api/webhook/"+id+"/failures", keyAcme, "", nil)
	if list.status != http.StatusOK {
		t.Fatalf("failures: %d %s", list.status, list.raw)
	}
	items := dataArray(t, list)
	if len(items) != 1 {
		t.Fatalf("failures = %s", list.raw)
	}
	got := items[0]
	if !sameKeys(got, "id", "webhookId", "eventId", "eventType", "subject", "attempts", "lastStatus", "lastError", "reason", "firstAttemptAt", "lastAttemptAt") {
		t.Fatalf("failure keys = %v", keysOf(got))
	}
	if got["id"] != "msg_one" || got["webhookId"] != id || got["attempts"] != float64(7) || got["lastStatus"] != float64(503) ||
		got["reason"] != "max_attempts" || got["lastAttemptAt"] != want.LastAttemptAt.Format(time.RFC3339) {
		t.Fatalf("failure = %v", got)
	}

	retryPath := "/api/webhook/" + id + "/failures/msg_one/retry"
	wantError(t, e.do("POST", retryPath, keyOther, "", nil), http.StatusNotFound, codeNotFound)
	wantError(t, e.do("POST", "/api/webhook/"+id+"/failures/msg_nope/retry", keyAcme, "", nil), http.StatusNotFound, codeNotFound)

	r := e.do("POST", retryPath, keyAcme, "", nil)
	if r.status != http.StatusOK || string(r.raw) != `{"status":"success","data":{"redelivered":true}}`+"\n" {
		t.Fatalf("retry: %d %s", r.status, r.raw)
	}
	q.mu.Lock()
	queued := q.queued
	q.mu.Unlock()
	if len(queued) != 1 || queued[0].ID != "msg_one" || string(queued[0].Body) != string(want.Body) {
		t.Fatalf("redelivered %+v", queued)
	}
	if items := dataArray(t, e.do("GET", "/api/webhook/"+id+"/failures", keyAcme, "", nil)); len(items) != 0 {
		t.Fatalf("failure still listed after retry: %v", items)
	}
	wantError(t, e.do("POST", retryPath, keyAcme, "", nil), http.StatusNotFound, codeNotFound)
}

func TestRetryKeepsFailureWhenRedeliveryFails(t *testing.T) {
	q := &queueRedeliverer{err: errors.New("jetstream: timeout")}
	e := newTestEnv(t, func(c *Config) { c.Redeliver = q })
	id := e.mustCreate(keyAcme, validBody)["id"].(string)
	recordFailure(t, e, id, "msg_two")

	r := e.do("POST", "/api/webhook/"+id+"/failures/msg_two/retry", keyAcme, "", nil)
	wantError(t, r, http.StatusInternalServerError, codeInternal)
	if _, has := r.body["details"]; has {
		t.Fatalf("500 exposes details: %s", r.raw)
	}
	if items := dataArray(t, e.do("GET", "/api/webhook/"+id+"/failures", keyAcme, "", nil)); len(items) != 1 {
		t.Fatalf("failure lost after a failed redelivery: %v", items)
	}
}

// startLog runs a shared failure log on its own NATS connection, as one
// webhookd instance would, until the test ends.
func startLog(t *testing.T, url string) *failurelog.Log {
	t.Helper()
	_, js := natstest.Connect(t, url)
	l, err := failurelog.New(failurelog.Config{JetStream: js, MaxBodyBytes: 1024})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = l.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	for deadline := time.Now().Add(10 * time.Second); l.Ready() != nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("failure log not set up")
		}
	}
	return l
}

// TestFailuresThroughSharedLog: two API servers, each with its own
// failure log on one NATS (two instances behind a load balancer; they
// share one registry file here, which the registry's replica would
// otherwise keep in step). A failure recorded by instance a is listed
// and retried through b, is gone from a afterwards, and deleting the
// webhook forgets its records for everyone.
func TestFailuresThroughSharedLog(t *testing.T) {
	ns := natstest.JetStream(t)
	logA, logB := startLog(t, ns.ClientURL()), startLog(t, ns.ClientURL())
	q := &queueRedeliverer{}
	a := newTestEnv(t, func(c *Config) { c.Redeliver = q; c.Failures = logA })
	srvB, err := New(Config{Store: a.store, Keys: registry.NewKeyRing([]registry.APIKey{{Workspace: wsAcme, Key: keyAcme},
		{Workspace: wsOther, Key: keyOther}}, nil), Redeliver: q, Failures: logB})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srvB.Handler())
	t.Cleanup(hs.Close)
	b := &testEnv{t: t, srv: srvB, store: a.store, url: hs.URL}
	ctx := t.Context()

	id := a.mustCreate(keyAcme, validBody)["id"].(string)
	now := time.Now().UTC().Truncate(time.Second)
	for i, fid := range []string{"msg_old", "msg_new"} {
		f := registry.Failure{
			ID: fid, WebhookID: id, Workspace: wsAcme, EventID: "ev-" + fid, EventType: events.WorkflowRunCompleted,
			Subject: "events.acme.workflowRun.completed", Attempts: 7, LastStatus: 503, Reason: "max_attempts",
			FirstAttemptAt: now.Add(-time.Hour), LastAttemptAt: now.Add(time.Duration(i) * time.Second),
			Body: []byte(`{"type":"workflowRun.completed","workflowId":"WFCG-1"}`),
		}
		if err := logA.RecordFailure(ctx, f); err != nil {
			t.Fatal(err)
		}
	}
	big := registry.Failure{ID: "msg_big", WebhookID: id, Workspace: wsAcme, EventID: "ev-big",
		EventType: events.WorkflowRunCompleted, Reason: "max_age", Body: make([]byte, 2048)}
	if err := logA.RecordFailure(ctx, big); err != nil {
		t.Fatal(err)
	}

	for name, e := range map[string]*testEnv{"a": a, "b": b} {
		items := dataArray(t, e.do("GET", "/api/webhook/"+id+"/failures", keyAcme, "", nil))
		if len(items) != 3 || items[0]["id"] != "msg_big" || items[1]["id"] != "msg_new" || items[2]["id"] != "msg_old" {
			t.Fatalf("%s lists %v", name, items)
		}
		if items[1]["lastAttemptAt"] != now.Add(time.Second).Format(time.RFC3339) || items[1]["attempts"] != float64(7) {
			t.Fatalf("%s: failure = %v", name, items[1])
		}
		if l := dataArray(t, e.do("GET", "/api/webhook/"+id+"/failures?limit=1", keyAcme, "", nil)); len(l) != 1 {
			t.Fatalf("%s: limit=1 gave %d", name, len(l))
		}
		wantError(t, e.do("GET", "/api/webhook/"+id+"/failures", keyOther, "", nil), http.StatusNotFound, codeNotFound)
	}

	retry := "/api/webhook/" + id + "/failures/msg_old/retry"
	wantError(t, b.do("POST", retry, keyOther, "", nil), http.StatusNotFound, codeNotFound)
	wantError(t, b.do("POST", "/api/webhook/"+id+"/failures/msg_nope/retry", keyAcme, "", nil), http.StatusNotFound, codeNotFound)
	if r := b.do("POST", retry, keyAcme, "", nil); r.status != http.StatusOK {
		t.Fatalf("retry through b: %d %s", r.status, r.raw)
	}
	q.mu.Lock()
	queued := q.queued
	q.mu.Unlock()
	if len(queued) != 1 || queued[0].ID != "msg_old" || queued[0].Workspace != wsAcme || len(queued[0].Body) == 0 {
		t.Fatalf("redelivered %+v", queued)
	}
	if items := dataArray(t, a.do("GET", "/api/webhook/"+id+"/failures", keyAcme, "", nil)); len(items) != 2 {
		t.Fatalf("a still lists the record retried through b: %v", items)
	}
	wantError(t, a.do("POST", retry, keyAcme, "", nil), http.StatusNotFound, codeNotFound)
	// A record whose body was too large to keep is listed, not retried.
	r := a.do("POST", "/api/webhook/"+id+"/failures/msg_big/retry", keyAcme, "", nil)
	wantError(t, r, http.StatusConflict, codeRedeliveryUnavailable)

	if r := a.do("DELETE", "/api/webhook/"+id, keyAcme, "", nil); r.status != http.StatusOK {
		t.Fatalf("delete: %d %s", r.status, r.raw)
	}
	if fs, err := logB.Failures(ctx, id, 0); err != nil || len(fs) != 0 {
		t.Fatalf("records of the deleted webhook: %d, %v", len(fs), err)
	}
}

// TestFailuresUnavailable: a shared log that is not set up yet (NATS
// unreachable) makes the routes answer 503, not 500 or an empty list.
func TestFailuresUnavailable(t *testing.T) {
	ns := natstest.JetStream(t)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	l, err := failurelog.New(failurelog.Config{JetStream: js}) // never Run
	if err != nil {
		t.Fatal(err)
	}
	e := newTestEnv(t, func(c *Config) { c.Redeliver = &queueRedeliverer{}; c.Failures = l })
	id := e.mustCreate(keyAcme, validBody)["id"].(string)
	wantError(t, e.do("GET", "/api/webhook/"+id+"/failures", keyAcme, "", nil), http.StatusServiceUnavailable, codeRegistryUnavailable)
	wantError(t, e.do("POST", "/api/webhook/"+id+"/failures/msg_a/retry", keyAcme, "", nil), http.StatusServiceUnavailable, codeRegistryUnavailable)
	// Deleting still works: forgetting the records is best effort.
	if r := e.do("DELETE", "/api/webhook/"+id, keyAcme, "", nil); r.status != http.StatusOK {
		t.Fatalf("delete: %d %s", r.status, r.raw)
	}
}
