package dispatcher

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/webhookd/webhookd/events"
)

func TestBundleRoundTrip(t *testing.T) {
	want := bundle{
		ID: bundleID("evt-1", 0), Gen: 3, EventID: "evt 1; with spaces", Workspace: "acme",
		EventType: events.WorkflowRunFailed, Subject: "events.acme.workflowRun.failed",
		Published: time.Unix(0, 1700000000123456789), Webhooks: []string{"wh_a", "wh_b", "wh_c"}, Body: []byte(`{"x":1}`),
	}
	got, err := decodeBundle(want.header(), want.Body)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, want)
	}
	if h := want.header(); h.Get(hdrMsgID) != want.ID+".g3" {
		t.Errorf("dedupe id %q", h.Get(hdrMsgID))
	}
	if bundleID("evt-1", 0) == bundleID("evt-1", 256) || bundleID("evt-1", 0) != bundleID("evt-1", 0) {
		t.Error("bundle ids must be stable per event and chunk, distinct across chunks")
	}
}

func TestDecodeBundleRejects(t *testing.T) {
	good := bundle{ID: "pk_1", EventID: "e", Workspace: "w", EventType: events.WorkflowRunStarted,
		Published: time.Unix(1, 0), Webhooks: []string{"wh_1"}}
	tests := []struct {
		name   string
		header string
		hooks  string
	}{
		{"empty", "", "wh_1"},
		{"version", "2 pk_1 0 w workflowRun.started 1000000000", "wh_1"},
		{"fields", "1 pk_1 0 w workflowRun.started", "wh_1"},
		{"generation", "1 pk_1 -1 w workflowRun.started 1000000000", "wh_1"},
		{"type", "1 pk_1 0 w nope 1000000000", "wh_1"},
		{"workspace", "1 pk_1 0 w.x workflowRun.started 1000000000", "wh_1"},
		{"published", "1 pk_1 0 w workflowRun.started zero", "wh_1"},
		{"no webhooks", "1 pk_1 0 w workflowRun.started 1000000000", " "},
		{"too many webhooks", "1 pk_1 0 w workflowRun.started 1000000000", strings.Repeat("wh_x ", maxBundle+1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := good.header()
			h.Set(hdrBundle, tt.header)
			h.Set(hdrWebhooks, tt.hooks)
			if _, err := decodeBundle(h, nil); err == nil {
				t.Errorf("accepted %q / %q", tt.header, tt.hooks)
			}
		})
	}
}

func FuzzDecodeBundle(f *testing.F) {
	f.Add("1 pk_1 0 w workflowRun.started 1000000000", "wh_1 wh_2", "e")
	f.Add("1 pk_1 9 acme workflowCreditLimit.reached 5", "wh_1", "")
	f.Fuzz(func(t *testing.T, head, hooks, event string) {
		b := bundle{}
		h := b.header()
		h.Set(hdrBundle, head)
		h.Set(hdrWebhooks, hooks)
		h.Set(hdrEvent, event)
		got, err := decodeBundle(h, nil)
		if err != nil {
			return
		}
		// Whatever decodes must encode and decode to itself.
		again, err := decodeBundle(got.header(), nil)
		if err != nil || !reflect.DeepEqual(again, got) {
			t.Fatalf("re-decode of %+v: %+v, %v", got, again, err)
		}
	})
}
