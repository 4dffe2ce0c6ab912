package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/webhookd/webhookd/events"
	"github.com/webhookd/webhookd/registry"
	"github.com/webhookd/webhookd/registry/health"
)

// healthBook is a HealthSource over a map: the API's side of the
// interface, without the shared bucket behind health.Store.
type healthBook struct {
	mu       sync.Mutex
	records  map[string]health.Record
	resets   []string
	resetErr error
}

func newHealthBook() *healthBook { return &healthBook{records: map[string]health.Record{}} }

func (b *healthBook) Health(id string) health.Record {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.records[id]
}

func (b *healthBook) Reset(_ context.Context, id string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.resets = append(b.resets, id)
	if b.resetErr != nil {
		return b.resetErr
	}
	delete(b.records, id)
	return nil
}

func (b *healthBook) set(id string, r health.Record) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.records[id] = r
}

func (b *healthBook) resetCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.resets)
}

func jsonObject(t *testing.T, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("bad expectation %s: %v", s, err)
	}
	return m
}

func TestWebhookViewStateAndHealth(t *testing.T) {
	t1 := time.Date(2026, 1, 2, 3, 4, 5, 678901234, time.UTC)
	t2 := time.Date(2026, 1, 2, 5, 0, 0, 0, time.FixedZone("CET", 3600)) // 04:00:00Z
	t3 := t1.Add(90 * time.Second)
	tests := []struct {
		name     string
		noSource bool
		record   health.Record
		disable  string // reason; "" leaves it enabled
		wantData string // the view's fields beyond id, url, eventType, workflowId, createdAt
	}{
		{"never attempted, no health source", true, health.Record{}, "",
			`{"enabled":true,"health":{"state":"healthy"}}`},
		{"never attempted", false, health.Record{}, "",
			`{"enabled":true,"health":{"state":"healthy"}}`},
		{"healthy with history", false, health.Record{State: health.Healthy, LastSuccessAt: t1, LastFailureAt: t2, LastErrorClass: "timeout"}, "",
			`{"enabled":true,"health":{"state":"healthy","lastSuccessAt":"2026-01-02T03:04:05.678Z","lastFailureAt":"2026-01-02T04:00:00.000Z","lastErrorClass":"timeout"}}`},
		{"failing", false, health.Record{State: health.Failing, ConsecutiveFailures: 3, FailingSince: t1, LastSuccessAt: t1,
			LastFailureAt: t3, LastErrorClass: "5xx", LastStatus: 503}, "",
			`{"enabled":true,"health":{"state":"failing","consecutiveFailures":3,"lastSuccessAt":"2026-01-02T03:04:05.678Z",
			"lastFailureAt":"2026-01-02T03:05:35.678Z","lastErrorClass":"5xx","lastStatus":503}}`},
		{"circuit open", false, health.Record{State: health.CircuitOpen, ConsecutiveFailures: 8, LastFailureAt: t1,
			LastErrorClass: "network", OpenUntil: t3, Cooldown: time.Minute}, "",
			`{"enabled":true,"health":{"state":"circuit_open","consecutiveFailures":8,"lastFailureAt":"2026-01-02T03:04:05.678Z",
			"lastErrorClass":"network","circuitOpenUntil":"2026-01-02T03:05:35.678Z"}}`},
		{"open-until of a closed circuit is not shown", false, health.Record{State: health.Failing, ConsecutiveFailures: 1, OpenUntil: t3}, "",
			`{"enabled":true,"health":{"state":"failing","consecutiveFailures":1}}`},
		{"disabled for failing", false, health.Record{State: health.CircuitOpen, ConsecutiveFailures: 40, LastFailureAt: t1,
			LastErrorClass: "5xx", LastStatus: 500, OpenUntil: t3}, registry.DisabledFailing,
			`{"enabled":false,"disabledReason":"failing","disabledAt":"2026-01-02T04:00:00.000Z","health":{"state":"circuit_open",
			"consecutiveFailures":40,"lastFailureAt":"2026-01-02T03:04:05.678Z","lastErrorClass":"5xx","lastStatus":500,"circuitOpenUntil":"2026-01-02T03:05:35.678Z"}}`},
		{"disabled for gone", false, health.Record{State: health.Failing, ConsecutiveFailures: 1, LastFailureAt: t1,
			LastErrorClass: "4xx", LastStatus: 410}, registry.DisabledGone,
			`{"enabled":false,"disabledReason":"gone","disabledAt":"2026-01-02T04:00:00.000Z","health":{"state":"failing",
			"consecutiveFailures":1,"lastFailureAt":"2026-01-02T03:04:05.678Z","lastErrorClass":"4xx","lastStatus":410}}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			book := newHealthBook()
			e := newTestEnv(t, func(c *Config) {
				if !tc.noSource {
					c.Health = book
				}
			})
			created := e.mustCreate(keyAcme, validBody)
			if !reflect.DeepEqual(created["health"], map[string]any{"state": "healthy"}) || created["enabled"] != true {
				t.Fatalf("create shows enabled %v health %v", created["enabled"], created["health"])
			}
			id := created["id"].(string)
			book.set(id, tc.record)
			if tc.disable != "" {
				if _, _, err := e.store.Disable(t.Context(), id, tc.disable, t2); err != nil {
					t.Fatal(err)
				}
			}
			want := jsonObject(t, tc.wantData)
			for _, k := range []string{"id", "url", "eventType", "workflowId", "createdAt"} {
				want[k] = created[k]
			}
			got := dataObject(t, e.do(http.MethodGet, "/api/webhook/"+id, keyAcme, "", nil))
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("get:\n got %v\nwant %v", got, want)
			}
			list := dataArray(t, e.do(http.MethodGet, "/api/webhook", keyAcme, "", nil))
			if len(list) != 1 || !reflect.DeepEqual(list[0], want) {
				t.Fatalf("list:\n got %v\nwant %v", list, want)
			}
		})
	}
}

// lockedBuffer collects log output written by the server's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestEnableRoute(t *testing.T) {
	book := newHealthBook()
	e := newTestEnv(t, func(c *Config) { c.Health = book })
	id := e.mustCreate(keyAcme, validBody)["id"].(string)
	if _, _, err := e.store.Disable(t.Context(), id, registry.DisabledFailing, time.Now()); err != nil {
		t.Fatal(err)
	}
	book.set(id, health.Record{State: health.CircuitOpen, ConsecutiveFailures: 9, FailingSince: time.Now().Add(-6 * 24 * time.Hour)})
	path := "/api/webhook/" + id + "/enable"

	steps := []struct {
		name         string
		method, path string
		key          string
		status       int
		code         string // error code, for errors
		enabled      bool   // the stored webhook's state afterwards
		resets       int    // Reset calls so far
	}{
		{"no key", http.MethodPost, path, "", 401, codeUnauthorized, false, 0},
		{"other workspace", http.MethodPost, path, keyOther, 404, codeNotFound, false, 0},
		{"unknown id", http.MethodPost, "/api/webhook/wh_doesnotexist/enable", keyAcme, 404, codeNotFound, false, 0},
		{"wrong method", http.MethodGet, path, keyAcme, 405, codeMethodNotAllowed, false, 0},
		{"enable", http.MethodPost, path, keyAcme, 200, "", true, 1},
		{"enable again", http.MethodPost, path, keyAcme, 200, "", true, 2},
	}
	for _, st := range steps {
		r := e.do(st.method, st.path, st.key, "", nil)
		if st.code != "" {
			wantError(t, r, st.status, st.code)
			if st.status == http.StatusMethodNotAllowed && r.header.Get("Allow") != http.MethodPost {
				t.Fatalf("%s: Allow = %q", st.name, r.header.Get("Allow"))
			}
		} else {
			if r.status != st.status || !sameKeys(r.body, "status", "data") || r.body["status"] != "success" {
				t.Fatalf("%s: %d %s", st.name, r.status, r.raw)
			}
			d := dataObject(t, r)
			if d["id"] != id || d["enabled"] != true || !reflect.DeepEqual(d["health"], map[string]any{"state": "healthy"}) {
				t.Fatalf("%s: view %s", st.name, r.raw)
			}
			if _, has := d["disabledReason"]; has {
				t.Fatalf("%s: an enabled webhook shows disabledReason: %s", st.name, r.raw)
			}
		}
		got, err := e.store.Get(t.Context(), wsAcme, id)
		if err != nil || got.Disabled == st.enabled {
			t.Fatalf("%s: stored %+v, %v; want enabled %v", st.name, got, err, st.enabled)
		}
		if book.resetCount() != st.resets {
			t.Fatalf("%s: %d health resets, want %d", st.name, book.resetCount(), st.resets)
		}
	}
	if m := e.store.Index().Match(wsAcme, events.WorkflowRunCompleted, "WFCG-1", nil); len(m) != 1 || m[0].ID != id {
		t.Fatalf("the enabled webhook does not match events: %v", m)
	}
}

func TestEnableWhenHealthResetFails(t *testing.T) {
	book := newHealthBook()
	book.resetErr = errors.New("health: the shared health bucket is unavailable")
	logs := &lockedBuffer{}
	e := newTestEnv(t, func(c *Config) {
		c.Health = book
		c.Logger = slog.New(slog.NewJSONHandler(logs, nil))
	})
	id := e.mustCreate(keyAcme, validBody)["id"].(string)
	if _, _, err := e.store.Disable(t.Context(), id, registry.DisabledGone, time.Now()); err != nil {
		t.Fatal(err)
	}
	book.set(id, health.Record{State: health.Failing, ConsecutiveFailures: 1, LastStatus: 410})
	r := e.do(http.MethodPost, "/api/webhook/"+id+"/enable", keyAcme, "", nil)
	if r.status != http.StatusOK || dataObject(t, r)["enabled"] != true {
		t.Fatalf("enable with a failing health reset: %d %s", r.status, r.raw)
	}
	// The view tells the truth: the old health is still there.
	if h, _ := dataObject(t, r)["health"].(map[string]any); h["state"] != "failing" {
		t.Fatalf("health after a failed reset: %v", h)
	}
	var warned bool
	for line := range strings.SplitSeq(strings.TrimSpace(logs.String()), "\n") {
		if strings.Contains(line, "https://") || strings.Contains(line, "token=") {
			t.Fatalf("a log line carries the webhook URL: %s", line)
		}
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["level"] == "WARN" && rec["webhook_id"] == id {
			warned = true
		}
	}
	if !warned {
		t.Fatalf("no warning naming webhook %s:\n%s", id, logs.String())
	}
}
