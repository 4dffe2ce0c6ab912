package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/webhookd/webhookd/events"
	"github.com/webhookd/webhookd/registry"
	"github.com/webhookd/webhookd/registry/health"
)

func strp(s string) *string { return &s }
func boolp(b bool) *bool    { return &b }

func TestDecodePatch(t *testing.T) {
	tests := []struct {
		name   string
		body   string
		want   registry.Patch
		status int      // 0 = success
		code   string   // for errors
		fields []string // details keys, for 400 UNKNOWN_FIELD and 422
	}{
		{"every field", `{"url":"https://x.example/","eventType":"workflowRun.failed","workflowId":"W","description":"d","enabled":false}`,
			registry.Patch{URL: strp("https://x.example/"), EventType: strp("workflowRun.failed"), WorkflowID: strp("W"),
				Description: strp("d"), Enabled: boolp(false)}, 0, "", nil},
		{"one field", `{"enabled":true}`, registry.Patch{Enabled: boolp(true)}, 0, "", nil},
		{"null clears strings", `{"workflowId":null,"description":null}`,
			registry.Patch{WorkflowID: strp(""), Description: strp("")}, 0, "", nil},
		{"null url is an empty url", `{"url":null}`, registry.Patch{URL: strp("")}, 0, "", nil},
		{"empty object", ` {} `, registry.Patch{}, 0, "", nil},
		{"duplicate key, last wins", `{"description":"a","description":"b"}`, registry.Patch{Description: strp("b")}, 0, "", nil},
		{"unknown field", `{"url":"u","workflowID":"W"}`, registry.Patch{}, 400, codeUnknownField, []string{"workflowID"}},
		{"read-only fields", `{"secret":"whsec_x","id":"wh_1","createdAt":"x"}`, registry.Patch{}, 400, codeUnknownField,
			[]string{"secret", "id", "createdAt"}},
		{"type errors keep good fields", `{"url":1,"enabled":"yes","description":"ok","eventType":["x"]}`,
			registry.Patch{Description: strp("ok")}, 422, codeValidationFailed, []string{"url", "enabled", "eventType"}},
		{"null enabled", `{"enabled":null}`, registry.Patch{}, 422, codeValidationFailed, []string{"enabled"}},
		{"empty", ``, registry.Patch{}, 400, codeInvalidJSON, nil},
		{"array", `[{"url":"u"}]`, registry.Patch{}, 400, codeInvalidJSON, nil},
		{"null", `null`, registry.Patch{}, 400, codeInvalidJSON, nil},
		{"trailing data", `{"enabled":true} {}`, registry.Patch{}, 400, codeInvalidJSON, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := decodePatch(strings.NewReader(tc.body))
			if tc.status == 0 {
				if err != nil {
					t.Fatalf("err = %v", err)
				}
			} else {
				var ae *apiError
				if !errors.As(err, &ae) || ae.Status != tc.status || ae.Code != tc.code {
					t.Fatalf("err = %v, want %d %s", err, tc.status, tc.code)
				}
				if tc.fields != nil && !sameKeys(ae.Details, tc.fields...) {
					t.Fatalf("details %v, want keys %v", ae.Details, tc.fields)
				}
				if tc.status != 422 {
					return
				}
			}
			if !reflect.DeepEqual(p, tc.want) {
				t.Fatalf("patch = %s, want %s", patchString(p), patchString(tc.want))
			}
		})
	}
}

func patchString(p registry.Patch) string {
	b, _ := json.Marshal(p)
	return string(b)
}

func FuzzDecodePatch(f *testing.F) {
	for _, s := range []string{
		`{"url":"https://x.example/","eventType":"workflowRun.failed","workflowId":"W","description":"d","enabled":false}`,
		`{}`, `{"enabled":true}`, `{"enabled":1}`, `{"url":null}`, `{"x":1}`, `null`, `[]`, ``, `{"url":"a"} x`,
		`{"description":"\ud800"}`, "{\"description\":\"\xff\"}", `{"workflowId":{"a":[1,2]}}`, `{"enabled":"true"}`,
		`{"url":"a","url":1}`, strings.Repeat("{", 5000),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := decodePatch(bytes.NewReader(data))
		if err == nil {
			var obj map[string]json.RawMessage
			if e := json.Unmarshal(data, &obj); e != nil || obj == nil {
				t.Fatalf("accepted %q which is not one JSON object: %v", data, e)
			}
			for name := range obj {
				if !slices.Contains(patchFields, name) {
					t.Fatalf("accepted unknown member %q", name)
				}
			}
			if len(obj) > 0 && p.IsEmpty() {
				t.Fatalf("members %v decoded to an empty patch", obj)
			}
			return
		}
		var ae *apiError
		if !errors.As(err, &ae) {
			t.Fatalf("error %T %v is not *apiError", err, err)
		}
		if ae.Status < 400 || ae.Status > 499 || ae.Code == "" {
			t.Fatalf("error %+v is not a 4xx with a code", ae)
		}
		if (ae.Code == codeValidationFailed || ae.Code == codeUnknownField) && len(ae.Details) == 0 {
			t.Fatalf("%s without field details", ae.Code)
		}
	})
}

// patchEnv is a test server with a health book, and a webhook to patch.
type patchEnv struct {
	*testEnv
	book *healthBook
	logs *lockedBuffer
	id   string
	hook map[string]any // its create answer
}

func newPatchEnv(t *testing.T) *patchEnv {
	t.Helper()
	book, logs := newHealthBook(), &lockedBuffer{}
	e := newTestEnv(t, func(c *Config) {
		c.Health = book
		c.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	hook := e.mustCreate(keyAcme, validBody)
	return &patchEnv{testEnv: e, book: book, logs: logs, id: hook["id"].(string), hook: hook}
}

func (e *patchEnv) patch(key, ctype, body string) response {
	e.t.Helper()
	return e.do(http.MethodPatch, "/api/webhook/"+e.id, key, ctype, strings.NewReader(body))
}

// TestPatchRoute: PATCH /api/webhook/{id}, step by step on one webhook:
// refusals change nothing; each change shows in the answer, in GET, in
// the store and in the match index; the secret never changes.
func TestPatchRoute(t *testing.T) {
	e := newPatchEnv(t)
	secret := e.hook["secret"].(string)
	failing := health.Record{State: health.CircuitOpen, ConsecutiveFailures: 7, FailingSince: time.Now().Add(-time.Hour)}
	e.book.set(e.id, failing)
	const js = "application/json"
	steps := []struct {
		name        string
		key, ctype  string
		body        string
		status      int
		code        string   // error code, for errors
		fields      []string // details keys of the error
		want        map[string]any
		resets      int // health resets so far
		matchType   events.Type
		matchWF     string
		disabled    bool
		description string
	}{
		{name: "no key", ctype: js, body: `{"description":"x"}`, status: 401, code: codeUnauthorized,
			matchType: events.WorkflowRunCompleted, matchWF: "WFCG-1"},
		{name: "other workspace", key: keyOther, ctype: js, body: `{"description":"x"}`, status: 404, code: codeNotFound,
			matchType: events.WorkflowRunCompleted, matchWF: "WFCG-1"},
		{name: "form body", key: keyAcme, ctype: "application/x-www-form-urlencoded", body: `description=x`, status: 400,
			code: codeUnsupportedMediaType, matchType: events.WorkflowRunCompleted, matchWF: "WFCG-1"},
		{name: "empty body", key: keyAcme, ctype: js, body: ``, status: 400, code: codeInvalidJSON,
			matchType: events.WorkflowRunCompleted, matchWF: "WFCG-1"},
		{name: "no fields", key: keyAcme, ctype: js, body: `{}`, status: 422, code: codeValidationFailed, fields: []string{"body"},
			matchType: events.WorkflowRunCompleted, matchWF: "WFCG-1"},
		{name: "misspelt field", key: keyAcme, ctype: js, body: `{"description":"x","workflowID":"W"}`, status: 400,
			code: codeUnknownField, fields: []string{"workflowID"}, matchType: events.WorkflowRunCompleted, matchWF: "WFCG-1"},
		{name: "secret is not patchable", key: keyAcme, ctype: js, body: `{"secret":"whsec_AAAA"}`, status: 400,
			code: codeUnknownField, fields: []string{"secret"}, matchType: events.WorkflowRunCompleted, matchWF: "WFCG-1"},
		{name: "every bad field at once", key: keyAcme, ctype: js,
			body:   `{"url":"http://169.254.169.254/latest","eventType":"nope","enabled":"yes","description":"` + strings.Repeat("x", 513) + `"}`,
			status: 422, code: codeValidationFailed, fields: []string{"url", "eventType", "enabled", "description"},
			matchType: events.WorkflowRunCompleted, matchWF: "WFCG-1"},
		{name: "cannot clear the url", key: keyAcme, ctype: js, body: `{"url":null}`, status: 422, code: codeValidationFailed,
			fields: []string{"url"}, matchType: events.WorkflowRunCompleted, matchWF: "WFCG-1"},
		{name: "description", key: keyAcme, ctype: js, body: `{"description":"Billing — prod"}`, status: 200,
			want: map[string]any{"description": "Billing — prod"}, matchType: events.WorkflowRunCompleted, matchWF: "WFCG-1",
			description: "Billing — prod"},
		{name: "merge patch media type; new url resets health", key: keyAcme, ctype: mergePatchType + "; charset=utf-8",
			body: `{"url":"https://hooks.example.com/v2?token=def"}`, status: 200,
			want:   map[string]any{"url": "https://hooks.example.com/v2?token=def", "health": map[string]any{"state": "healthy"}},
			resets: 1, matchType: events.WorkflowRunCompleted, matchWF: "WFCG-1", description: "Billing — prod"},
		{name: "move to another type and every workflow", key: keyAcme, ctype: js, body: `{"eventType":"workflowRun.failed","workflowId":null}`,
			status: 200, want: map[string]any{"eventType": "workflowRun.failed", "workflowId": ""}, resets: 1,
			matchType: events.WorkflowRunFailed, description: "Billing — prod"},
		{name: "disable", key: keyAcme, ctype: js, body: `{"enabled":false}`, status: 200,
			want: map[string]any{"enabled": false, "disabledReason": "manual"}, resets: 1, matchType: events.WorkflowRunFailed,
			disabled: true, description: "Billing — prod"},
		{name: "disable again keeps the first disable", key: keyAcme, ctype: js, body: `{"enabled":false,"description":""}`,
			status: 200, want: map[string]any{"enabled": false, "disabledReason": "manual"}, resets: 1,
			matchType: events.WorkflowRunFailed, disabled: true},
		{name: "enable resets health like POST enable", key: keyAcme, ctype: js, body: `{"enabled":true}`, status: 200,
			want: map[string]any{"enabled": true}, resets: 2, matchType: events.WorkflowRunFailed},
		{name: "enable an enabled one: nothing changes, health reset", key: keyAcme, ctype: js, body: `{"enabled":true}`,
			status: 200, want: map[string]any{"enabled": true}, resets: 3, matchType: events.WorkflowRunFailed},
	}
	var disabledAt any
	for _, st := range steps {
		if st.name == "enable resets health like POST enable" {
			e.book.set(e.id, failing)
		}
		r := e.patch(st.key, st.ctype, st.body)
		if st.code != "" {
			wantError(t, r, st.status, st.code)
			if st.fields != nil && !sameKeys(details(t, r), st.fields...) {
				t.Fatalf("%s: details %v, want keys %v", st.name, details(t, r), st.fields)
			}
		} else {
			if r.status != st.status || !sameKeys(r.body, "status", "data") {
				t.Fatalf("%s: %d %s", st.name, r.status, r.raw)
			}
			view := dataObject(t, r)
			if _, has := view["secret"]; has {
				t.Fatalf("%s: the answer carries the secret", st.name)
			}
			for k, v := range st.want {
				if !reflect.DeepEqual(view[k], v) {
					t.Fatalf("%s: %s = %v, want %v (%s)", st.name, k, view[k], v, r.raw)
				}
			}
			if got := dataObject(t, e.do(http.MethodGet, "/api/webhook/"+e.id, keyAcme, "", nil)); !reflect.DeepEqual(got, view) {
				t.Fatalf("%s: GET shows %v, PATCH answered %v", st.name, got, view)
			}
			if st.disabled {
				if disabledAt == nil {
					disabledAt = view["disabledAt"]
				} else if view["disabledAt"] != disabledAt {
					t.Fatalf("%s: disabledAt moved from %v to %v", st.name, disabledAt, view["disabledAt"])
				}
			}
		}
		if n := e.book.resetCount(); n != st.resets {
			t.Fatalf("%s: %d health resets, want %d", st.name, n, st.resets)
		}
		stored, err := e.store.Get(t.Context(), wsAcme, e.id)
		if err != nil || stored.Secret != secret || stored.Disabled != st.disabled || stored.Description != st.description {
			t.Fatalf("%s: stored %+v, %v", st.name, stored, err)
		}
		matched := false
		for _, m := range e.store.Index().Match(wsAcme, st.matchType, "WFCG-1", nil) {
			matched = matched || m.ID == e.id
		}
		if matched == st.disabled {
			t.Fatalf("%s: matched %v under %s, disabled %v", st.name, matched, st.matchType, st.disabled)
		}
	}
	if m := e.store.Index().Match(wsAcme, events.WorkflowRunCompleted, "WFCG-1", nil); len(m) != 0 {
		t.Fatalf("still matched under the old key: %v", m)
	}
	if s := dataObject(t, e.do(http.MethodGet, "/api/webhook/"+e.id+"/secret", keyAcme, "", nil))["secret"]; s != secret {
		t.Fatalf("secret after patches %v, want %v", s, secret)
	}
	for line := range strings.SplitSeq(strings.TrimSpace(e.logs.String()), "\n") {
		if strings.Contains(line, "token=") || strings.Contains(line, "hooks.example.com") || strings.Contains(line, "whsec_") {
			t.Fatalf("a log line carries the URL or the secret: %s", line)
		}
	}
	if !strings.Contains(e.logs.String(), `"msg":"webhook patched"`) || !strings.Contains(e.logs.String(), `"changed":"eventType,workflowId"`) {
		t.Fatalf("no patch log naming the changed fields:\n%s", e.logs.String())
	}
}

func TestPatchBodyLimit(t *testing.T) {
	e := newTestEnv(t, func(c *Config) { c.MaxBodyBytes = 128 })
	id := e.mustCreate(keyAcme, validBody)["id"].(string)
	r := e.do(http.MethodPatch, "/api/webhook/"+id, keyAcme, "application/json",
		strings.NewReader(`{"description":"`+strings.Repeat("x", 200)+`"}`))
	wantError(t, r, http.StatusRequestEntityTooLarge, codeBodyTooLarge)
}

// TestCreateWithDescription: create takes a description (validated like
// PATCH's) and every view shows it; without one the views have none.
func TestCreateWithDescription(t *testing.T) {
	e := newTestEnv(t)
	tests := []struct {
		name   string
		desc   string // JSON value, "" for absent
		status int
		fields []string
		want   any // the view's description; nil for absent
	}{
		{"absent", "", 200, nil, nil},
		{"null", `null`, 200, nil, nil},
		{"empty", `""`, 200, nil, nil},
		{"set", `"Payments (prod) ✓"`, 200, nil, "Payments (prod) ✓"},
		{"longest", `"` + strings.Repeat("é", 512) + `"`, 200, nil, strings.Repeat("é", 512)},
		{"too long", `"` + strings.Repeat("é", 513) + `"`, 422, []string{"description"}, nil},
		{"line break", `"a\nb"`, 422, []string{"description"}, nil},
		{"not a string, with a bad url", `7`, 422, []string{"description", "url"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			url := "https://hooks.example.com/in"
			if tc.name == "not a string, with a bad url" {
				url = "ftp://x"
			}
			body := `{"url":"` + url + `","eventType":"workflowRun.started"`
			if tc.desc != "" {
				body += `,"description":` + tc.desc
			}
			r := e.create(keyAcme, body+"}")
			if tc.status != 200 {
				wantError(t, r, tc.status, codeValidationFailed)
				if !sameKeys(details(t, r), tc.fields...) {
					t.Fatalf("details %v, want %v", details(t, r), tc.fields)
				}
				return
			}
			created := dataObject(t, r)
			got := dataObject(t, e.do(http.MethodGet, "/api/webhook/"+created["id"].(string), keyAcme, "", nil))
			for _, view := range []map[string]any{created, got} {
				if d, has := view["description"]; (tc.want == nil) == has || (has && d != tc.want) {
					t.Fatalf("view description %v (present %v), want %v", d, has, tc.want)
				}
			}
		})
	}
}
