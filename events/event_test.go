package events

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestSubjects(t *testing.T) {
	cases := []struct {
		prefix, subject string
		ws              string
		typ             Type
		wantErr         error
	}{
		{"", "events.default.workflowRun.completed", "default", WorkflowRunCompleted, nil},
		{"", "events.acme_1-x.workflowCreditLimit.reached", "acme_1-x", WorkflowCreditLimitReached, nil},
		{"acme.events", "acme.events.ws.workflowRun.failed", "ws", WorkflowRunFailed, nil},
		{"", "other.default.workflowRun.completed", "", "", ErrBadSubject},
		{"", "events.default", "", "", ErrBadSubject},
		{"", "events..workflowRun.completed", "", "", ErrBadSubject},
		{"", "events.default.workflowRun.exploded", "", "", ErrUnknownType},
		{"", "events.default.workflowRun", "", "", ErrUnknownType},
		{"", "eventsX.default.workflowRun.started", "", "", ErrBadSubject},
	}
	for _, c := range cases {
		s := Subjects{Prefix: c.prefix}
		ws, typ, err := s.Parse(c.subject)
		if !errors.Is(err, c.wantErr) || (err == nil && (ws != c.ws || typ != c.typ)) {
			t.Errorf("Parse(%q) = %q, %q, %v; want %q, %q, %v", c.subject, ws, typ, err, c.ws, c.typ, c.wantErr)
		}
		if c.wantErr == nil && s.For(ws, typ) != c.subject {
			t.Errorf("For(%q, %q) = %q", ws, typ, s.For(ws, typ))
		}
	}
	if got := (Subjects{}).Filter(); got != "events.>" {
		t.Errorf("Filter = %q", got)
	}
	for _, bad := range []string{"", "a..b", "a.*", "a.>", "a b", "."} {
		if ValidatePrefix(bad) == nil {
			t.Errorf("ValidatePrefix(%q) accepted", bad)
		}
	}
}

func TestDecode(t *testing.T) {
	d := Decoder{MaxBytes: 1024}
	const subj = "events.acme.workflowRun.completed"
	cases := []struct {
		name, subject, body string
		msgID               string
		reason              Reason // "" = accepted
		wf, id              string
	}{
		{"full", subj, `{"type":"workflowRun.completed","workflowId":"WF-1","result":{"x":1}}`, "m1", "", "WF-1", "m1"},
		{"no workflow", subj, `{"type":"workflowRun.completed"}`, "", "", "", "seq-42"},
		{"null workflow", subj, ` {"type":"workflowRun.completed","workflowId":null}`, "", "", "", "seq-42"},
		{"credit", "events.acme.workflowCreditLimit.reached", `{"type":"workflowCreditLimit.reached","metadata":{}}`, "", "", "", "seq-42"},
		{"not json", subj, `{"type":`, "", ReasonNotJSON, "", ""},
		{"empty", subj, ``, "", ReasonNotJSON, "", ""},
		{"trailing garbage", subj, `{"type":"workflowRun.completed"} x`, "", ReasonNotJSON, "", ""},
		{"trailing comma", subj, `{"type":"workflowRun.completed",}`, "", ReasonNotJSON, "", ""},
		{"array", subj, `[{"type":"workflowRun.completed"}]`, "", ReasonNotObject, "", ""},
		{"string", subj, `"x"`, "", ReasonNotObject, "", ""},
		{"no type", subj, `{"workflowId":"x"}`, "", ReasonUnknownType, "", ""},
		{"unknown type", subj, `{"type":"workflowRun.exploded"}`, "", ReasonUnknownType, "", ""},
		{"numeric type", subj, `{"type":7}`, "", ReasonBadField, "", ""},
		{"mismatch", subj, `{"type":"workflowRun.failed"}`, "", ReasonTypeMismatch, "", ""},
		{"numeric workflow", subj, `{"type":"workflowRun.completed","workflowId":5}`, "", ReasonBadField, "", ""},
		{"too large", subj, `{"type":"workflowRun.completed","p":"` + strings.Repeat("x", 1024) + `"}`, "", ReasonTooLarge, "", ""},
		{"bad subject", "events.acme", `{"type":"workflowRun.completed"}`, "", ReasonBadSubject, "", ""},
		{"subject unknown type", "events.acme.foo.bar", `{"type":"workflowRun.completed"}`, "", ReasonUnknownType, "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			body := []byte(c.body)
			ev, err := d.Decode(Message{Subject: c.subject, MsgID: c.msgID, StreamSeq: 42, Timestamp: time.Unix(1, 0), Data: body})
			if c.reason != "" {
				var de *DecodeError
				if !errors.As(err, &de) || de.Reason != c.reason {
					t.Fatalf("err = %v, want reason %s", err, c.reason)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ev.WorkflowID != c.wf || ev.ID != c.id || !bytes.Equal(ev.Body, body) || ev.Workspace != "acme" {
				t.Errorf("event = %+v", ev)
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	for _, s := range []string{`{"type":"workflowRun.completed","workflowId":"W"}`, `{}`, `[]`, `nul`, `{"type":null}`,
		`{"type":"workflowRun.completed","workflowId":{"a":1}}`, "\xff", `{"type":"workflowRun.completed"} x`} {
		f.Add("events.a.workflowRun.completed", []byte(s))
	}
	f.Add("events.a.workflowRun.failed", []byte(`{"type":"workflowRun.failed"}`))
	d := Decoder{MaxBytes: 4096}
	f.Fuzz(func(t *testing.T, subject string, body []byte) {
		ev, err := d.Decode(Message{Subject: subject, StreamSeq: 1, Data: body})
		if err != nil {
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("error is not a DecodeError: %v", err)
			}
			return
		}
		if !bytes.Equal(ev.Body, body) || !ev.Type.Valid() || (Subjects{}).For(ev.Workspace, ev.Type) != subject {
			t.Fatalf("accepted event inconsistent: %+v", ev)
		}
	})
}

func FuzzParseSubject(f *testing.F) {
	for _, s := range []string{"events.a.workflowRun.completed", "events.a", "events..x.y", "events.a.b.c.d", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, subject string) {
		ws, typ, err := Subjects{}.Parse(subject)
		if err == nil && (Subjects{}).For(ws, typ) != subject {
			t.Fatalf("Parse(%q) round trip gives %q", subject, (Subjects{}).For(ws, typ))
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	body := []byte(`{"type":"workflowRun.completed","workflowId":"WFCG-1","workflowRunId":"r-9","result":{"text":"` +
		strings.Repeat("lorem ipsum ", 80) + `"},"metadata":{"a":1}}`)
	d := Decoder{}
	m := Message{Subject: "events.default.workflowRun.completed", MsgID: "x", StreamSeq: 1, Data: body}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.Decode(m); err != nil {
			b.Fatal(err)
		}
	}
}
