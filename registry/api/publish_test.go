package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/webhookd/webhookd/events"
	"github.com/webhookd/webhookd/events/natstest"
)

// publishEnv is a test server publishing into a real events stream on an
// in-process NATS server.
type publishEnv struct {
	*testEnv
	ns      *server.Server
	stream  jetstream.Stream
	decoder events.Decoder
}

// newPublishEnv: maxBytes is the decoder's event size limit (0: the
// default), streamBytes the events stream's cap (0: none).
func newPublishEnv(t *testing.T, maxBytes int, streamBytes int64, mutate ...func(*Config)) *publishEnv {
	t.Helper()
	ns := natstest.JetStream(t)
	_, js := natstest.Client(t, ns)
	dec := events.Decoder{Subjects: events.Subjects{Prefix: "events"}, MaxBytes: maxBytes}
	stream, err := events.EnsureStream(t.Context(), js, events.StreamConfig{Subjects: dec.Subjects, MaxBytes: streamBytes})
	if err != nil {
		t.Fatal(err)
	}
	pub, err := events.NewPublisher(js, events.PublisherConfig{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	e := newTestEnv(t, append([]func(*Config){func(c *Config) { c.Events, c.EventDecoder = pub, dec }}, mutate...)...)
	return &publishEnv{testEnv: e, ns: ns, stream: stream, decoder: dec}
}

func (e *publishEnv) publish(key, idemKey, body string) response {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.url+"/api/events", strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set(apiKeyHeader, key)
	req.Header.Set("Content-Type", "application/json")
	if idemKey != "" {
		req.Header.Set(idempotencyKeyHeader, idemKey)
	}
	return e.send(req)
}

// stored reads the event at seq back from the stream, as fan-out does.
func (e *publishEnv) stored(seq uint64) events.Event {
	e.t.Helper()
	m, err := e.stream.GetMsg(e.t.Context(), seq)
	if err != nil {
		e.t.Fatalf("stored message %d: %v", seq, err)
	}
	ev, err := e.decoder.Decode(events.Message{Subject: m.Subject, MsgID: m.Header.Get(jetstream.MsgIDHeader),
		StreamSeq: m.Sequence, Timestamp: m.Time, Data: m.Data})
	if err != nil {
		e.t.Fatalf("stored message %d is rejected by the fan-out decoder: %v", seq, err)
	}
	return ev
}

func (e *publishEnv) storedCount() uint64 {
	e.t.Helper()
	info, err := e.stream.Info(e.t.Context())
	if err != nil {
		e.t.Fatal(err)
	}
	return info.State.Msgs
}

// TestPublishRoute: accepted events are stored on the caller's workspace
// subject exactly as fan-out reads them, with 202 after the stream's
// acknowledgement; an Idempotency-Key repeat is one stored event.
func TestPublishRoute(t *testing.T) {
	e := newPublishEnv(t, 0, 0)
	const eventObject = `{"type":"workflowRun.completed","workflowId":"WFCG-1","workflowRunId":"r-9","result":{"ok":true}}`
	steps := []struct {
		name      string
		key       string // API key
		idem      string
		body      string
		stored    string // the stored bytes
		subject   string
		workflow  string
		eventID   string // "" = a generated evt_ id
		duplicate bool
		sameSeqAs int // index+1 of an earlier step whose sequence this one must answer
	}{
		{name: "event object, stored byte for byte", key: keyAcme, idem: "r-9-completed", body: eventObject, stored: eventObject,
			subject: "events.acme.workflowRun.completed", workflow: "WFCG-1", eventID: "acme:r-9-completed"},
		{name: "same key again", key: keyAcme, idem: "r-9-completed", body: eventObject, stored: eventObject,
			subject: "events.acme.workflowRun.completed", workflow: "WFCG-1", eventID: "acme:r-9-completed", duplicate: true, sameSeqAs: 1},
		{name: "same key, simple form: still the first event", key: keyAcme, idem: "r-9-completed",
			body: `{"eventType":"workflowRun.completed"}`, stored: eventObject, subject: "events.acme.workflowRun.completed",
			workflow: "WFCG-1", eventID: "acme:r-9-completed", duplicate: true, sameSeqAs: 1},
		{name: "same key, other workspace: its own event", key: keyOther, idem: "r-9-completed", body: eventObject, stored: eventObject,
			subject: "events.other.workflowRun.completed", workflow: "WFCG-1", eventID: "other:r-9-completed"},
		{name: "simple form", key: keyAcme, idem: "r-10",
			body:    `{"eventType":"workflowRun.failed","workflowId":"WFCG-1","payload":{"workflowRunId":"r-10","error":{"msg":"<boom> & co"}}}`,
			stored:  `{"type":"workflowRun.failed","workflowId":"WFCG-1","workflowRunId":"r-10","error":{"msg":"<boom> & co"}}`,
			subject: "events.acme.workflowRun.failed", workflow: "WFCG-1", eventID: "acme:r-10"},
		{name: "simple form, nothing but the type", key: keyAcme, body: ` {"eventType":"workflowCreditLimit.reached","payload":{ }} `,
			stored: `{"type":"workflowCreditLimit.reached"}`, subject: "events.acme.workflowCreditLimit.reached"},
		{name: "simple form, null workflow", key: keyAcme, body: `{"eventType":"workflowRun.started","workflowId":null,"payload":null}`,
			stored: `{"type":"workflowRun.started"}`, subject: "events.acme.workflowRun.started"},
		{name: "no key: a new event each time", key: keyAcme, body: `{"eventType":"workflowRun.started"}`,
			stored: `{"type":"workflowRun.started"}`, subject: "events.acme.workflowRun.started"},
		{name: "printable key with spaces", key: keyAcme, idem: "order 42 / try #1", body: eventObject, stored: eventObject,
			subject: "events.acme.workflowRun.completed", workflow: "WFCG-1", eventID: "acme:order 42 / try #1"},
	}
	seqs := make([]uint64, len(steps))
	var unique int
	for i, st := range steps {
		r := e.publish(st.key, st.idem, st.body)
		if r.status != http.StatusAccepted || r.body["status"] != "success" || !sameKeys(r.body, "status", "data") {
			t.Fatalf("%s: %d %s", st.name, r.status, r.raw)
		}
		d := dataObject(t, r)
		if !sameKeys(d, "eventId", "sequence", "duplicate") {
			t.Fatalf("%s: data %s", st.name, r.raw)
		}
		id, _ := d["eventId"].(string)
		seq, _ := d["sequence"].(float64)
		seqs[i] = uint64(seq)
		if d["duplicate"] != st.duplicate || seq < 1 {
			t.Fatalf("%s: %s", st.name, r.raw)
		}
		if st.eventID == "" && (!strings.HasPrefix(id, "evt_") || len(id) != 4+26) || st.eventID != "" && id != st.eventID {
			t.Fatalf("%s: eventId %q, want %q", st.name, id, st.eventID)
		}
		if st.sameSeqAs > 0 && seqs[i] != seqs[st.sameSeqAs-1] {
			t.Fatalf("%s: sequence %d, want the first one's %d", st.name, seqs[i], seqs[st.sameSeqAs-1])
		}
		if !st.duplicate {
			unique++
		}
		ev := e.stored(seqs[i])
		if string(ev.Body) != st.stored || ev.Subject != st.subject || ev.WorkflowID != st.workflow || ev.ID != id {
			t.Fatalf("%s: stored %q on %s (workflow %q, id %q)", st.name, ev.Body, ev.Subject, ev.WorkflowID, ev.ID)
		}
	}
	if n := e.storedCount(); n != uint64(unique) {
		t.Fatalf("the stream holds %d events, want %d", n, unique)
	}
}

// TestPublishRefusals: what the fan-out decoder would drop, and every
// other bad request, is refused with the right answer and stores nothing.
func TestPublishRefusals(t *testing.T) {
	e := newPublishEnv(t, 512, 0)
	long := strings.Repeat("k", maxIdempotencyKeyLen+1)
	tests := []struct {
		name    string
		key     string
		ctype   string
		headers map[string][]string
		body    string
		status  int
		code    string
		fields  []string // details keys
	}{
		{name: "no API key", body: `{"eventType":"workflowRun.started"}`, status: 401, code: codeUnauthorized},
		{name: "wrong content type", key: keyAcme, ctype: "text/plain", body: `{"eventType":"workflowRun.started"}`,
			status: 400, code: codeUnsupportedMediaType},
		{name: "empty", key: keyAcme, body: ``, status: 400, code: codeInvalidJSON},
		{name: "not JSON", key: keyAcme, body: `{"type":`, status: 400, code: codeInvalidJSON},
		{name: "array", key: keyAcme, body: `[{"type":"workflowRun.started"}]`, status: 400, code: codeInvalidJSON},
		{name: "trailing data", key: keyAcme, body: `{"type":"workflowRun.started"}{}`, status: 400, code: codeInvalidJSON},
		{name: "unknown type", key: keyAcme, body: `{"type":"workflowRun.paused"}`, status: 422, code: codeValidationFailed,
			fields: []string{"type"}},
		{name: "operational type", key: keyAcme, body: `{"type":"webhook.disabled","webhookId":"wh_x"}`, status: 422,
			code: codeValidationFailed, fields: []string{"type"}},
		{name: "type not a string", key: keyAcme, body: `{"type":7}`, status: 422, code: codeValidationFailed, fields: []string{"type"}},
		{name: "type null", key: keyAcme, body: `{"type":null}`, status: 422, code: codeValidationFailed, fields: []string{"type"}},
		{name: "numeric workflowId", key: keyAcme, body: `{"type":"workflowRun.started","workflowId":12}`, status: 422,
			code: codeValidationFailed, fields: []string{"workflowId"}},
		{name: "second type member, other case", key: keyAcme, body: `{"type":"workflowRun.started","Type":"workflowRun.failed"}`,
			status: 422, code: codeValidationFailed, fields: []string{"type"}},
		{name: "simple: no eventType", key: keyAcme, body: `{"workflowId":"W"}`, status: 422, code: codeValidationFailed,
			fields: []string{"eventType"}},
		{name: "simple: unknown eventType", key: keyAcme, body: `{"eventType":"x"}`, status: 422, code: codeValidationFailed,
			fields: []string{"eventType"}},
		{name: "simple: bad workflowId and payload", key: keyAcme, body: `{"eventType":"workflowRun.started","workflowId":[1],"payload":"x"}`,
			status: 422, code: codeValidationFailed, fields: []string{"workflowId", "payload"}},
		{name: "simple: payload naming the type", key: keyAcme, body: `{"eventType":"workflowRun.started","payload":{"TYPE":"workflowRun.failed"}}`,
			status: 422, code: codeValidationFailed, fields: []string{"payload"}},
		{name: "simple: payload naming the workflow", key: keyAcme, body: `{"eventType":"workflowRun.started","workflowId":"A","payload":{"workflowID":"B"}}`,
			status: 422, code: codeValidationFailed, fields: []string{"payload"}},
		{name: "simple: other members", key: keyAcme, body: `{"eventType":"workflowRun.started","workflowRunId":"r-1"}`,
			status: 400, code: codeUnknownField, fields: []string{"workflowRunId"}},
		{name: "over max event bytes", key: keyAcme, body: `{"type":"workflowRun.started","pad":"` + strings.Repeat("x", 600) + `"}`,
			status: 413, code: codeBodyTooLarge},
		{name: "idempotency key too long", key: keyAcme, headers: map[string][]string{idempotencyKeyHeader: {long}},
			body: `{"type":"workflowRun.started"}`, status: 400, code: codeInvalidIdempotencyKey},
		{name: "idempotency key not ASCII", key: keyAcme, headers: map[string][]string{idempotencyKeyHeader: {"clé"}},
			body: `{"type":"workflowRun.started"}`, status: 400, code: codeInvalidIdempotencyKey},
		{name: "idempotency key twice", key: keyAcme, headers: map[string][]string{idempotencyKeyHeader: {"a", "b"}},
			body: `{"type":"workflowRun.started"}`, status: 400, code: codeInvalidIdempotencyKey},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodPost, e.url+"/api/events", strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if tc.key != "" {
				req.Header.Set(apiKeyHeader, tc.key)
			}
			ctype := tc.ctype
			if ctype == "" {
				ctype = "application/json"
			}
			req.Header.Set("Content-Type", ctype)
			for k, vs := range tc.headers {
				req.Header[k] = vs
			}
			r := e.send(req)
			wantError(t, r, tc.status, tc.code)
			if tc.fields != nil && !sameKeys(details(t, r), tc.fields...) {
				t.Fatalf("details %v, want keys %v", details(t, r), tc.fields)
			}
		})
	}
	if n := e.storedCount(); n != 0 {
		t.Fatalf("refused requests stored %d events", n)
	}
}

// TestPublishUnavailable: without a publisher, and with NATS gone, the
// answer is 503 EVENTS_UNAVAILABLE, which says whether to retry with the
// same key; the cause is logged, not shown.
func TestPublishUnavailable(t *testing.T) {
	none := newTestEnv(t)
	wantError(t, none.do(http.MethodPost, "/api/events", keyAcme, "application/json",
		strings.NewReader(`{"type":"workflowRun.started"}`)), http.StatusServiceUnavailable, codeEventsUnavailable)

	// A full stream refuses: nothing was stored, retry later.
	full := newPublishEnv(t, 0, 400)
	var r response
	for i := range 10 {
		r = full.publish(keyAcme, "", `{"type":"workflowRun.started","pad":"`+strings.Repeat("x", 100)+`"}`)
		if r.status != http.StatusAccepted {
			break
		}
		if i == 9 {
			t.Fatal("a 400-byte stream took 10 events of 150 bytes")
		}
	}
	wantError(t, r, http.StatusServiceUnavailable, codeEventsUnavailable)
	if reason, _ := details(t, r)["reason"].(string); !strings.Contains(reason, "nothing was stored") {
		t.Fatalf("full stream: reason %q", reason)
	}

	logs := &lockedBuffer{}
	e := newPublishEnv(t, 0, 0, func(c *Config) { c.Logger = slogJSON(logs) })
	e.ns.Shutdown()
	e.ns.WaitForShutdown()
	r = e.publish(keyAcme, "k-1", `{"type":"workflowRun.started"}`)
	wantError(t, r, http.StatusServiceUnavailable, codeEventsUnavailable)
	if reason, _ := details(t, r)["reason"].(string); !strings.Contains(reason, "same Idempotency-Key") {
		t.Fatalf("reason %q does not say to retry with the same key", reason)
	}
	if !strings.Contains(logs.String(), "request failed") || !strings.Contains(logs.String(), "did not acknowledge") {
		t.Fatalf("the cause is not logged:\n%s", logs.String())
	}
}

func TestIdempotencyKey(t *testing.T) {
	tests := []struct {
		values []string
		want   string
		ok     bool
	}{
		{nil, "", true},
		{[]string{"a"}, "a", true},
		{[]string{"order-42:try#1 (x)~"}, "order-42:try#1 (x)~", true},
		{[]string{strings.Repeat("k", maxIdempotencyKeyLen)}, strings.Repeat("k", maxIdempotencyKeyLen), true},
		{[]string{strings.Repeat("k", maxIdempotencyKeyLen+1)}, "", false},
		{[]string{""}, "", false},
		{[]string{"tab\there"}, "", false},
		{[]string{"del\x7f"}, "", false},
		{[]string{"ünï"}, "", false},
		{[]string{"a", "a"}, "", false},
	}
	for _, tc := range tests {
		h := http.Header{}
		if tc.values != nil {
			h[idempotencyKeyHeader] = tc.values
		}
		got, err := idempotencyKey(h)
		var ae *apiError
		if tc.ok != (err == nil) || got != tc.want || (err != nil && (!errors.As(err, &ae) || ae.Code != codeInvalidIdempotencyKey)) {
			t.Errorf("%q: %q, %v", tc.values, got, err)
		}
	}
}

func FuzzIdempotencyKey(f *testing.F) {
	for _, s := range []string{"a", "", "order 42", "\x00", "é", strings.Repeat("x", 300), "\r\nNats-Msg-Id: x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		k, err := idempotencyKey(http.Header{idempotencyKeyHeader: {v}})
		if err != nil {
			return
		}
		if k != v || len(k) == 0 || len(k) > maxIdempotencyKeyLen || strings.ContainsAny(k, "\r\n\x00") {
			t.Fatalf("accepted %q as %q", v, k)
		}
	})
}

// FuzzBuildEvent: whatever the body, buildEvent either refuses it with a
// 4xx envelope error, or returns a subject and bytes that the fan-out's
// decoder accepts as an event of the caller's workspace and of the type
// the subject names: an accepted event is never dropped later.
func FuzzBuildEvent(f *testing.F) {
	for _, s := range []string{
		`{"type":"workflowRun.completed","workflowId":"WFCG-1","result":{}}`,
		`{"eventType":"workflowRun.failed","workflowId":"W","payload":{"a":1,"b":[true,null]}}`,
		`{"eventType":"workflowRun.started","payload":{}}`, `{"eventType":"workflowRun.started","payload":{"Type":1}}`,
		`{"type":"workflowRun.started","Type":"x"}`, `{"type":"workflowRun.started","WORKFLOWID":5}`,
		`{"eventType":"workflowRun.started","workflowId":"\u003c"}`, `{"eventType":"x"}`, `{}`, `[]`, `null`, ``,
		`{"type":"workflowRun.started"} `, "{\"type\":\"workflowRun.started\",\"x\":\"\xff\"}",
		`{"eventType":"workflowRun.started","payload":{"x":1}, "payload":{"y":2}}`,
		`{"eventType":"workflowRun.started","payload" : { "a" : 1 } }`,
	} {
		f.Add([]byte(s))
	}
	dec := events.Decoder{Subjects: events.Subjects{Prefix: "events"}, MaxBytes: 4096}
	f.Fuzz(func(t *testing.T, body []byte) {
		subject, data, err := buildEvent(dec, "acme", body)
		if err != nil {
			var ae *apiError
			if !errors.As(err, &ae) || ae.Status < 400 || ae.Status > 499 || ae.Code == "" {
				t.Fatalf("error %v is not a 4xx envelope error", err)
			}
			if (ae.Code == codeValidationFailed || ae.Code == codeUnknownField) && len(ae.Details) == 0 {
				t.Fatalf("%s without field details", ae.Code)
			}
			return
		}
		ev, err := dec.Decode(events.Message{Subject: subject, Data: data})
		if err != nil {
			t.Fatalf("accepted %q as %q on %s, which fan-out rejects: %v", body, data, subject, err)
		}
		if ev.Workspace != "acme" || subject != dec.Subjects.For("acme", ev.Type) {
			t.Fatalf("event %+v on %s", ev, subject)
		}
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(body, &obj); err != nil {
			t.Fatalf("accepted %q, which is not a JSON object: %v", body, err)
		}
		if _, isEvent := obj["type"]; isEvent && !bytes.Equal(data, body) {
			t.Fatalf("an event object was not stored byte for byte: %q -> %q", body, data)
		}
	})
}
