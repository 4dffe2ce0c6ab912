package api

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/webhookd/webhookd/registry"
)

// downJournal is a shared registry whose NATS is unreachable.
type downJournal struct{}

func (downJournal) Put(context.Context, string, []byte) error {
	return fmt.Errorf("%w: nats: no servers available", registry.ErrUnavailable)
}
func (downJournal) Update(context.Context, string, func([]byte) ([]byte, error)) error {
	return fmt.Errorf("%w: nats: no servers available", registry.ErrUnavailable)
}
func (downJournal) Delete(context.Context, string) error {
	return fmt.Errorf("%w: nats: no servers available", registry.ErrUnavailable)
}

func TestSharedRegistryUnavailable(t *testing.T) {
	e := newTestEnv(t)
	id := e.mustCreate(keyAcme, `{"url":"https://example.com/h","eventType":"workflowRun.completed"}`)["id"].(string)
	e.store.UseJournal(downJournal{})

	for _, r := range []response{
		e.create(keyAcme, `{"url":"https://example.com/h2","eventType":"workflowRun.failed"}`),
		e.do(http.MethodDelete, "/api/webhook/"+id, keyAcme, "", nil),
		e.do(http.MethodPost, "/api/webhook/"+id+"/enable", keyAcme, "", nil),
	} {
		if r.status != http.StatusServiceUnavailable || r.body["errorCode"] != codeRegistryUnavailable {
			t.Fatalf("status %d body %s, want 503 %s", r.status, r.raw, codeRegistryUnavailable)
		}
	}
	// Nothing changed, and reads still work.
	if r := e.do(http.MethodGet, "/api/webhook/"+id, keyAcme, "", nil); r.status != http.StatusOK {
		t.Fatalf("get after refused delete: %d %s", r.status, r.raw)
	}
	if e.store.Count() != 1 {
		t.Fatalf("count %d after refused writes, want 1", e.store.Count())
	}
	// Another workspace's id is still a 404, not a 503.
	if r := e.do(http.MethodDelete, "/api/webhook/"+id, keyOther, "", nil); r.status != http.StatusNotFound {
		t.Fatalf("delete of another workspace's id: %d", r.status)
	}
}
