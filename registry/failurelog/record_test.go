package failurelog

import (
	"bytes"
	"errors"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/webhookd/webhookd/events"
	"github.com/webhookd/webhookd/registry"
)

func sampleFailure(webhookID, id string) registry.Failure {
	at := time.Date(2026, 11, 24, 9, 0, 0, 123456789, time.UTC)
	return registry.Failure{
		ID: id, WebhookID: webhookID, Workspace: "acme", EventID: "ev-" + id,
		EventType: events.WorkflowRunCompleted, Subject: "events.acme.workflowRun.completed",
		Attempts: 7, LastStatus: 503, LastError: "503 Service Unavailable\r\nX-Evil: 1", Reason: "max_attempts",
		FirstAttemptAt: at.Add(-time.Hour), LastAttemptAt: at,
		Body: []byte(`{"type":"workflowRun.completed","workflowId":"WFCG-1"}`),
	}
}

func TestRecordRoundTrip(t *testing.T) {
	long := strings.Repeat("é", maxLastError) // 2 bytes a rune: truncation must not split one
	cases := []struct {
		name     string
		f        registry.Failure
		keepBody bool
	}{
		{"whole", sampleFailure("wh_a", "msg_1"), true},
		{"body left out", sampleFailure("wh_a", "msg_2"), false},
		{"long error", func() registry.Failure { f := sampleFailure("wh_a", "msg_3"); f.LastError = long; return f }(), true},
		{"empty body", func() registry.Failure { f := sampleFailure("wh_a", "msg_4"); f.Body = nil; return f }(), true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := encodeRecord("webhookd.failures.wh_a", c.f, c.keepBody)
			if err != nil {
				t.Fatal(err)
			}
			if v := m.Header.Get(hdrRecord); strings.ContainsAny(v, "\r\n") {
				t.Fatalf("header value spans lines: %q", v)
			}
			got, err := decodeRecord("wh_a", m.Header, m.Data, true)
			if err != nil {
				t.Fatal(err)
			}
			want := c.f
			want.LastError = truncateUTF8(want.LastError, maxLastError)
			if !c.keepBody || len(want.Body) == 0 {
				want.Body = nil
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("decoded\n%+v\nwant\n%+v", got, want)
			}
			if len(got.LastError) > maxLastError || !strings.HasPrefix(c.f.LastError, got.LastError) {
				t.Fatalf("last error %d bytes, not a prefix", len(got.LastError))
			}
			headersOnly, err := decodeRecord("wh_a", m.Header, nil, false)
			if err != nil || headersOnly.Body != nil || headersOnly.ID != c.f.ID {
				t.Fatalf("headers-only decode = %+v, %v", headersOnly, err)
			}
		})
	}
}

func TestDecodeRejects(t *testing.T) {
	good, err := encodeRecord("s", sampleFailure("wh_a", "msg_1"), true)
	if err != nil {
		t.Fatal(err)
	}
	meta := good.Header.Get(hdrRecord)
	cases := []struct {
		name    string
		webhook string
		hdr     nats.Header
		data    []byte
	}{
		{"no header", "wh_a", nats.Header{}, good.Data},
		{"two headers", "wh_a", nats.Header{hdrRecord: {meta, meta}}, good.Data},
		{"not json", "wh_a", nats.Header{hdrRecord: {"{"}}, good.Data},
		{"other version", "wh_a", nats.Header{hdrRecord: {strings.Replace(meta, `"v":1`, `"v":2`, 1)}}, good.Data},
		{"no id", "wh_a", nats.Header{hdrRecord: {strings.Replace(meta, `"id":"msg_1"`, `"id":""`, 1)}}, good.Data},
		{"other webhook's subject", "wh_b", good.Header, good.Data},
		{"body cut short", "wh_a", good.Header, good.Data[:3]},
		{"negative size", "wh_a", nats.Header{hdrRecord: {regexp.MustCompile(`"bodyBytes":\d+`).ReplaceAllString(meta, `"bodyBytes":-1`)}}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := decodeRecord(c.webhook, c.hdr, c.data, true); !errors.Is(err, errMalformed) {
				t.Fatalf("err = %v, want errMalformed", err)
			}
		})
	}
}

// FuzzDecodeRecord: no input panics the decoder, and whatever it accepts
// encodes back to a record that decodes to the same failure.
func FuzzDecodeRecord(f *testing.F) {
	good, err := encodeRecord("s", sampleFailure("wh_a", "msg_1"), true)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good.Header.Get(hdrRecord), good.Data, true)
	f.Add(good.Header.Get(hdrRecord), []byte(nil), false)
	f.Add(`{"v":1,"id":"x","webhookId":"wh_a","bodyKept":false}`, []byte("junk"), true)
	f.Add(`{"v":1,"id":"x","webhookId":"wh_a","bodyBytes":-5,"bodyKept":true}`, []byte{}, true)
	f.Add(`not json`, []byte{0xff}, true)
	f.Fuzz(func(t *testing.T, meta string, data []byte, withBody bool) {
		got, err := decodeRecord("wh_a", nats.Header{hdrRecord: {meta}}, data, withBody)
		if err != nil {
			if !errors.Is(err, errMalformed) {
				t.Fatalf("error %v does not wrap errMalformed", err)
			}
			return
		}
		if got.ID == "" || got.WebhookID != "wh_a" {
			t.Fatalf("accepted %+v", got)
		}
		m, err := encodeRecord("s", got, got.Body != nil)
		if err != nil {
			t.Fatal(err)
		}
		again, err := decodeRecord("wh_a", m.Header, m.Data, true)
		if err != nil {
			t.Fatalf("re-encoded record rejected: %v", err)
		}
		// Times lose their zone and monotonic reading in JSON; compare
		// the rest field by field.
		if again.ID != got.ID || again.Workspace != got.Workspace || again.LastError != truncateUTF8(got.LastError, maxLastError) ||
			!bytes.Equal(again.Body, got.Body) || !again.LastAttemptAt.Equal(got.LastAttemptAt) || again.Attempts != got.Attempts {
			t.Fatalf("round trip changed %+v into %+v", got, again)
		}
	})
}
