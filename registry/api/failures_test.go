package api

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/webhookd/webhookd/events"
	"github.com/webhookd/webhookd/registry"
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
