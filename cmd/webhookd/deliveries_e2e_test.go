package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// deliveryJSON is a delivery as GET …/deliveries answers it.
type deliveryJSON struct {
	ID, WebhookID, EventID, State, Reason string
	NextAttemptAt                         string
	Attempts                              []struct {
		Attempt              int
		Status               int
		ErrorClass, Response string
		State, Trigger       string
		DurationMs           float64
	}
}

func (d *daemon) deliveries(t *testing.T, id, query string) ([]deliveryJSON, string) {
	t.Helper()
	status, out := d.api(http.MethodGet, "/api/webhook/"+id+"/deliveries"+query, nil)
	if status != http.StatusOK {
		t.Fatalf("GET deliveries%s: %d %s", query, status, out)
	}
	var env struct {
		Data       []deliveryJSON
		NextCursor string
	}
	if err := json.Unmarshal(out, &env); err != nil {
		t.Fatal(err)
	}
	return env.Data, env.NextCursor
}

// TestDeliveryLogThroughTwoInstances: every attempt shows while the
// delivery is still retrying, the final states are right, one delivery,
// one event and a manual retry work, the log is bounded per webhook, and
// a second instance answers all of it the same.
func TestDeliveryLogThroughTwoInstances(t *testing.T) {
	if testing.Short() {
		t.Skip("real daemons")
	}
	url := sharedNATS(t)
	flags := []string{"--retry-initial", "300ms", "--retry-max-interval", "600ms", "--retry-max-attempts", "3",
		"--circuit-failures", "100000", "--circuit-timeouts", "100000", "--delivery-log-per-webhook", "12"}
	a, b := onNATS(t, url, flags...), onNATS(t, url, flags...)
	a.start()
	b.start()

	var mu sync.Mutex
	tries := map[string]int{} // path + run id -> attempts seen
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev struct{ WorkflowRunID string }
		_ = json.NewDecoder(r.Body).Decode(&ev)
		mu.Lock()
		tries[r.URL.Path+" "+ev.WorkflowRunID]++
		n := tries[r.URL.Path+" "+ev.WorkflowRunID]
		mu.Unlock()
		switch {
		case r.URL.Path == "/dead":
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, "down for maintenance")
		case r.URL.Path == "/flaky" && n < 3:
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprint(w, "boom")
		default:
			fmt.Fprint(w, `{"ok":true}`)
		}
	}))
	defer recv.Close()
	dead, _ := a.register(recv.URL+"/dead", "workflowRun.completed", "")
	flaky, _ := a.register(recv.URL+"/flaky", "workflowRun.completed", "")
	publishEvents(t, a.natsURL(), 3)

	// Visible while retrying, through the other instance.
	waitUntil(t, 15*time.Second, "a retrying delivery in B's log", func() bool {
		ds, _ := b.deliveries(t, dead, "?status=retrying")
		return len(ds) > 0 && len(ds[0].Attempts) >= 1 && ds[0].NextAttemptAt != ""
	})
	ds, _ := b.deliveries(t, dead, "?status=retrying")
	if at := ds[0].Attempts[0]; at.Status != 503 || at.ErrorClass != "5xx" || at.Response != "down for maintenance" {
		t.Errorf("retrying attempt = %+v, want 503, 5xx and the response snippet", at)
	}

	waitUntil(t, 20*time.Second, "every delivery settled", func() bool {
		f, _ := a.deliveries(t, dead, "?status=failed")
		s, _ := a.deliveries(t, flaky, "?status=succeeded")
		return len(f) == 3 && len(s) == 3
	})
	for _, inst := range []*daemon{a, b} {
		failed, _ := inst.deliveries(t, dead, "?status=failed")
		for _, d := range failed {
			if len(d.Attempts) != 3 || d.Reason == "" || d.Attempts[2].State != "failed" {
				t.Errorf("failed delivery %s: %d attempts, reason %q", d.ID, len(d.Attempts), d.Reason)
			}
		}
		ok, _ := inst.deliveries(t, flaky, "")
		for _, d := range ok {
			if d.State != "succeeded" || len(d.Attempts) != 3 || d.Attempts[0].Response != "boom" || d.Attempts[2].Status != 200 {
				t.Errorf("flaky delivery %s = %+v, want two 500s then a 200", d.ID, d)
			}
		}
	}
	// Newest first, paged.
	page1, cursor := b.deliveries(t, flaky, "?limit=2")
	page2, end := b.deliveries(t, flaky, "?limit=2&cursor="+cursor)
	if len(page1) != 2 || cursor == "" || len(page2) != 1 || end != "" || page2[0].ID == page1[0].ID {
		t.Errorf("pages: %d (%q) then %d (%q)", len(page1), cursor, len(page2), end)
	}

	// One delivery; one event.
	one := page1[0]
	status, out := b.api(http.MethodGet, "/api/webhook/"+flaky+"/deliveries/"+one.ID, nil)
	if status != 200 || !strings.Contains(string(out), one.ID) {
		t.Errorf("GET one delivery: %d %s", status, out)
	}
	if status, _ := b.api(http.MethodGet, "/api/webhook/"+dead+"/deliveries/"+one.ID, nil); status != 404 {
		t.Errorf("another webhook's delivery: %d, want 404", status)
	}
	status, out = b.api(http.MethodGet, "/api/events/"+one.EventID, nil)
	var ev struct {
		Data struct {
			ID, EventType string
			InStream      bool
			Deliveries    []deliveryJSON
		}
	}
	_ = json.Unmarshal(out, &ev)
	states := map[string]string{}
	for _, d := range ev.Data.Deliveries {
		states[d.WebhookID] = d.State
	}
	if status != 200 || !ev.Data.InStream || states[dead] != "failed" || states[flaky] != "succeeded" || len(states) != 2 {
		t.Errorf("GET event: %d %s", status, out)
	}
	if status, _ := b.api(http.MethodGet, "/api/events/no-such-event", nil); status != 404 {
		t.Errorf("unknown event: %d, want 404", status)
	}

	// A manual retry: now, fresh budget, same webhook-id.
	failed, _ := a.deliveries(t, dead, "?status=failed")
	target := failed[0]
	status, out = b.api(http.MethodPost, "/api/webhook/"+dead+"/deliveries/"+target.ID+"/retry", nil)
	if status != http.StatusAccepted {
		t.Fatalf("retry: %d %s", status, out)
	}
	waitUntil(t, 15*time.Second, "the retried delivery's new attempts", func() bool {
		status, out := a.api(http.MethodGet, "/api/webhook/"+dead+"/deliveries/"+target.ID, nil)
		return status == 200 && strings.Count(string(out), `"trigger":"retry"`) >= 1
	})

	// Bounded per webhook: 12 attempts kept of the flaky webhook's many.
	publishEventsFrom(t, a.natsURL(), 100, 10)
	waitUntil(t, 20*time.Second, "the later events delivered", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return tries["/flaky run-109"] >= 3
	})
	time.Sleep(500 * time.Millisecond)
	all, _ := a.deliveries(t, flaky, "?limit=500")
	n := 0
	for _, d := range all {
		n += len(d.Attempts)
	}
	if n != 12 {
		t.Errorf("flaky webhook's log holds %d attempts, want the newest 12", n)
	}
}
