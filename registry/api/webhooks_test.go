package api

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"
)

const validBody = `{"url":"https://hooks.example.com/in?token=abc","eventType":"workflowRun.completed","workflowId":"WFCG-1"}`

func TestCreateGetListDeleteRoundTrip(t *testing.T) {
	e := newTestEnv(t)

	created := e.create(keyAcme, validBody)
	if created.status != http.StatusOK {
		t.Fatalf("create: %d %s", created.status, created.raw)
	}
	if !sameKeys(created.body, "status", "data") || created.body["status"] != "success" {
		t.Fatalf("create envelope = %s", created.raw)
	}
	hook := dataObject(t, created)
	if !sameKeys(hook, "id", "url", "eventType", "workflowId", "secret", "createdAt", "enabled", "health") {
		t.Fatalf("create data keys = %v", keysOf(hook))
	}
	id, _ := hook["id"].(string)
	secret, _ := hook["secret"].(string)
	if !strings.HasPrefix(id, "wh_") || !strings.HasPrefix(secret, "whsec_") {
		t.Fatalf("id %q / secret %q have wrong prefixes", id, secret)
	}
	if hook["url"] != "https://hooks.example.com/in?token=abc" || hook["eventType"] != "workflowRun.completed" || hook["workflowId"] != "WFCG-1" {
		t.Fatalf("create echoed %s", created.raw)
	}
	ts, err := time.Parse(time.RFC3339, hook["createdAt"].(string))
	if err != nil || time.Since(ts) > time.Hour || time.Until(ts) > time.Minute {
		t.Fatalf("createdAt %v: %v", hook["createdAt"], err)
	}
	if cc := created.header.Get("Cache-Control"); cc != "no-store" {
		t.Fatalf("Cache-Control = %q, want no-store (body carries a secret)", cc)
	}

	// Get and list show everything create did except the secret.
	view := map[string]any{}
	for k, v := range hook {
		if k != "secret" {
			view[k] = v
		}
	}
	got := e.do(http.MethodGet, "/api/webhook/"+id, keyAcme, "", nil)
	if got.status != http.StatusOK || !sameKeys(got.body, "status", "data") {
		t.Fatalf("get: %d %s", got.status, got.raw)
	}
	if d := dataObject(t, got); !reflect.DeepEqual(d, view) {
		t.Fatalf("get = %v, want create's answer without the secret %v", d, view)
	}

	list := e.do(http.MethodGet, "/api/webhook", keyAcme, "", nil)
	if list.status != http.StatusOK || !sameKeys(list.body, "status", "data") {
		t.Fatalf("list (single page must have no nextCursor): %d %s", list.status, list.raw)
	}
	items := dataArray(t, list)
	if len(items) != 1 || !reflect.DeepEqual(items[0], view) {
		t.Fatalf("list = %s", list.raw)
	}
	for _, r := range []response{got, list} {
		if bytes.Contains(r.raw, []byte("whsec_")) || bytes.Contains(r.raw, []byte(`"secret"`)) {
			t.Fatalf("a get or list answer carries the secret: %s", r.raw)
		}
	}

	// The explicit read gives it back.
	sec := e.do(http.MethodGet, "/api/webhook/"+id+"/secret", keyAcme, "", nil)
	if sec.status != http.StatusOK || !sameKeys(sec.body, "status", "data") || sec.body["status"] != "success" {
		t.Fatalf("get secret: %d %s", sec.status, sec.raw)
	}
	if d := dataObject(t, sec); !sameKeys(d, "secret") || d["secret"] != secret {
		t.Fatalf("get secret = %s, want {\"secret\":%q}", sec.raw, secret)
	}
	if cc := sec.header.Get("Cache-Control"); cc != "no-store" {
		t.Fatalf("secret read Cache-Control = %q, want no-store", cc)
	}

	del := e.do(http.MethodDelete, "/api/webhook/"+id, keyAcme, "", nil)
	if del.status != http.StatusOK || del.body["status"] != "success" {
		t.Fatalf("delete: %d %s", del.status, del.raw)
	}
	wantError(t, e.do(http.MethodGet, "/api/webhook/"+id, keyAcme, "", nil), http.StatusNotFound, codeNotFound)
	wantError(t, e.do(http.MethodGet, "/api/webhook/"+id+"/secret", keyAcme, "", nil), http.StatusNotFound, codeNotFound)
	wantError(t, e.do(http.MethodDelete, "/api/webhook/"+id, keyAcme, "", nil), http.StatusNotFound, codeNotFound)

	empty := e.do(http.MethodGet, "/api/webhook", keyAcme, "", nil)
	if empty.status != http.StatusOK || !bytes.Contains(empty.raw, []byte(`"data":[]`)) {
		t.Fatalf("empty list must be data:[]: %s", empty.raw)
	}
}

func TestCreateOptionalWorkflowAndContentTypeParams(t *testing.T) {
	e := newTestEnv(t)
	r := e.do(http.MethodPost, "/api/webhook", keyAcme, "application/json; charset=utf-8",
		strings.NewReader(`{"url":"https://a.example/x","eventType":"workflowCreditLimit.reached","extra":{"ignored":[1,2]},"workflowId":null}`))
	if r.status != http.StatusOK {
		t.Fatalf("status %d %s", r.status, r.raw)
	}
	if d := dataObject(t, r); d["workflowId"] != "" {
		t.Fatalf("workflowId = %v, want \"\"", d["workflowId"])
	}
}

func TestCreateErrors(t *testing.T) {
	e := newTestEnv(t)
	tests := []struct {
		name        string
		ctype, body string
		status      int
		code        string
		fields      []string // details keys that must be present
	}{
		{"malformed JSON", "application/json", `{"url":`, 400, codeInvalidJSON, []string{"reason"}},
		{"syntax error", "application/json", `{url:1}`, 400, codeInvalidJSON, []string{"reason"}},
		{"trailing garbage", "application/json", validBody + ` x`, 400, codeInvalidJSON, []string{"reason"}},
		{"second object", "application/json", validBody + validBody, 400, codeInvalidJSON, []string{"reason"}},
		{"array", "application/json", `[1]`, 400, codeInvalidJSON, []string{"reason"}},
		{"null", "application/json", `null`, 400, codeInvalidJSON, []string{"reason"}},
		{"string", "application/json", `"x"`, 400, codeInvalidJSON, []string{"reason"}},
		{"empty", "application/json", ``, 400, codeInvalidJSON, []string{"reason"}},
		{"text/plain", "text/plain", validBody, 400, codeUnsupportedMediaType, nil},
		{"no content type", "", validBody, 400, codeUnsupportedMediaType, nil},
		{"json-ish type", "application/jsonx", validBody, 400, codeUnsupportedMediaType, nil},
		{"all fields bad", "application/json", `{"url":"ftp://x","eventType":"nope","workflowId":"` + strings.Repeat("w", 5000) + `"}`,
			422, codeValidationFailed, []string{"url", "eventType", "workflowId"}},
		{"wrong JSON types", "application/json", `{"url":5,"eventType":true,"workflowId":[1]}`,
			422, codeValidationFailed, []string{"url", "eventType", "workflowId"}},
		{"type error plus invalid value", "application/json", `{"url":{},"eventType":"nope"}`,
			422, codeValidationFailed, []string{"url", "eventType"}},
		{"missing required", "application/json", `{}`, 422, codeValidationFailed, []string{"url", "eventType"}},
		{"names are case sensitive", "application/json", `{"URL":"https://a.example/","eventType":"workflowRun.failed"}`,
			422, codeValidationFailed, []string{"url"}},
		{"ssrf loopback", "application/json", `{"url":"http://127.0.0.1/","eventType":"workflowRun.started"}`,
			422, codeValidationFailed, []string{"url"}},
		{"ssrf metadata", "application/json", `{"url":"http://169.254.169.254/latest","eventType":"workflowRun.started"}`,
			422, codeValidationFailed, []string{"url"}},
		{"ssrf localhost", "application/json", `{"url":"http://localhost:8080/","eventType":"workflowRun.started"}`,
			422, codeValidationFailed, []string{"url"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(http.MethodPost, "/api/webhook", keyAcme, tc.ctype, strings.NewReader(tc.body))
			wantError(t, r, tc.status, tc.code)
			if len(tc.fields) > 0 {
				d := details(t, r)
				for _, f := range tc.fields {
					if msg, _ := d[f].(string); msg == "" {
						t.Fatalf("details lacks a message for %q: %s", f, r.raw)
					}
				}
			}
		})
	}
	// None of the refused requests may have created anything.
	if l := dataArray(t, e.do(http.MethodGet, "/api/webhook", keyAcme, "", nil)); len(l) != 0 {
		t.Fatalf("refused creates left %d webhooks", len(l))
	}
}

func TestBodyTooLarge(t *testing.T) {
	e := newTestEnv(t)
	big := `{"url":"https://a.example/` + strings.Repeat("a", 2<<20) + `","eventType":"workflowRun.started"}`
	t.Run("declared length", func(t *testing.T) {
		r := e.do(http.MethodPost, "/api/webhook", keyAcme, "application/json", strings.NewReader(big))
		wantError(t, r, http.StatusRequestEntityTooLarge, codeBodyTooLarge)
	})
	t.Run("chunked", func(t *testing.T) {
		// io.MultiReader hides the length, so the client streams it chunked
		// and the limit has to be enforced while reading.
		r := e.do(http.MethodPost, "/api/webhook", keyAcme, "application/json", io.MultiReader(strings.NewReader(big)))
		wantError(t, r, http.StatusRequestEntityTooLarge, codeBodyTooLarge)
	})
	t.Run("small limit", func(t *testing.T) {
		small := newTestEnv(t, func(c *Config) { c.MaxBodyBytes = 64 })
		r := small.create(keyAcme, validBody)
		wantError(t, r, http.StatusRequestEntityTooLarge, codeBodyTooLarge)
		if details(t, r)["limitBytes"] != float64(64) {
			t.Fatalf("limitBytes: %s", r.raw)
		}
	})
}

func TestAuthAndRouting(t *testing.T) {
	e := newTestEnv(t)
	id := e.mustCreate(keyAcme, validBody)["id"].(string)
	tests := []struct {
		name         string
		method, path string
		key          string
		status       int
		code         string
	}{
		{"list without key", "GET", "/api/webhook", "", 401, codeUnauthorized},
		{"list wrong key", "GET", "/api/webhook", "nope", 401, codeUnauthorized},
		{"get without key", "GET", "/api/webhook/" + id, "", 401, codeUnauthorized},
		{"delete wrong key", "DELETE", "/api/webhook/" + id, keyAcme + "x", 401, codeUnauthorized},
		{"create without key", "POST", "/api/webhook", "", 401, codeUnauthorized},
		{"unknown path", "GET", "/nope", keyAcme, 404, codeNotFound},
		{"unknown root", "GET", "/", "", 404, codeNotFound},
		{"unknown sub path", "GET", "/api/webhook/" + id + "/nope", keyAcme, 404, codeNotFound},
		{"unknown id get", "GET", "/api/webhook/wh_doesnotexist", keyAcme, 404, codeNotFound},
		{"unknown id delete", "DELETE", "/api/webhook/wh_doesnotexist", keyAcme, 404, codeNotFound},
		{"other workspace get", "GET", "/api/webhook/" + id, keyOther, 404, codeNotFound},
		{"other workspace delete", "DELETE", "/api/webhook/" + id, keyOther, 404, codeNotFound},
		{"other workspace failures", "GET", "/api/webhook/" + id + "/failures", keyOther, 404, codeNotFound},
		{"other workspace secret", "GET", "/api/webhook/" + id + "/secret", keyOther, 404, codeNotFound},
		{"unknown id secret", "GET", "/api/webhook/wh_doesnotexist/secret", keyAcme, 404, codeNotFound},
		{"secret without key", "GET", "/api/webhook/" + id + "/secret", "", 401, codeUnauthorized},
		{"post secret", "POST", "/api/webhook/" + id + "/secret", keyAcme, 405, codeMethodNotAllowed},
		{"put collection", "PUT", "/api/webhook", keyAcme, 405, codeMethodNotAllowed},
		{"post item", "POST", "/api/webhook/" + id, keyAcme, 405, codeMethodNotAllowed},
		{"delete healthz", "DELETE", "/healthz", "", 405, codeMethodNotAllowed},
		{"post metrics", "POST", "/metrics", "", 405, codeMethodNotAllowed},
		{"bad limit zero", "GET", "/api/webhook?limit=0", keyAcme, 400, codeInvalidLimit},
		{"bad limit big", "GET", "/api/webhook?limit=1001", keyAcme, 400, codeInvalidLimit},
		{"bad limit text", "GET", "/api/webhook?limit=ten", keyAcme, 400, codeInvalidLimit},
		{"bad limit failures", "GET", "/api/webhook/" + id + "/failures?limit=-1", keyAcme, 400, codeInvalidLimit},
		{"bad cursor", "GET", "/api/webhook?cursor=" + url.QueryEscape("!!not-a-cursor!!"), keyAcme, 400, codeInvalidCursor},
		{"retry without redeliverer", "POST", "/api/webhook/" + id + "/failures/msg_x/retry", keyAcme, 501, codeRedeliveryUnavailable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(tc.method, tc.path, tc.key, "", nil)
			wantError(t, r, tc.status, tc.code)
			if tc.status == http.StatusMethodNotAllowed && r.header.Get("Allow") == "" {
				t.Fatalf("405 without Allow header")
			}
		})
	}
	// The other workspace's attempts must not have touched acme's webhook.
	if r := e.do("GET", "/api/webhook/"+id, keyAcme, "", nil); r.status != http.StatusOK {
		t.Fatalf("webhook gone after foreign delete: %d %s", r.status, r.raw)
	}
}

func TestMethodNotAllowedListsMethods(t *testing.T) {
	e := newTestEnv(t)
	r := e.do(http.MethodPatch, "/api/webhook", keyAcme, "", nil)
	wantError(t, r, http.StatusMethodNotAllowed, codeMethodNotAllowed)
	allow := r.header.Get("Allow")
	for _, m := range []string{"GET", "POST"} {
		if !strings.Contains(allow, m) {
			t.Fatalf("Allow = %q, lacks %s", allow, m)
		}
	}
}

func TestLimitBounds(t *testing.T) {
	e := newTestEnv(t)
	for i := 0; i < 3; i++ {
		e.mustCreate(keyAcme, validBody)
	}
	for _, tc := range []struct {
		query string
		n     int
	}{{"", 3}, {"?limit=1", 1}, {"?limit=1000", 3}, {"?limit=3", 3}} {
		r := e.do("GET", "/api/webhook"+tc.query, keyAcme, "", nil)
		if r.status != http.StatusOK || len(dataArray(t, r)) != tc.n {
			t.Fatalf("%q: %d %s", tc.query, r.status, r.raw)
		}
	}
}

func TestWorkspaceIsolationAndPagination(t *testing.T) {
	e := newTestEnv(t)
	want := map[string]bool{}
	for i := 0; i < 5; i++ {
		d := e.mustCreate(keyAcme, fmt.Sprintf(`{"url":"https://a.example/%d","eventType":"workflowRun.started"}`, i))
		want[d["id"].(string)] = true
	}
	otherID := e.mustCreate(keyOther, validBody)["id"].(string)

	seen := map[string]bool{}
	cursor, pages := "", 0
	for {
		path := "/api/webhook?limit=2"
		if cursor != "" {
			path += "&cursor=" + url.QueryEscape(cursor)
		}
		r := e.do("GET", path, keyAcme, "", nil)
		if r.status != http.StatusOK {
			t.Fatalf("page %d: %d %s", pages, r.status, r.raw)
		}
		pages++
		items := dataArray(t, r)
		for _, it := range items {
			id := it["id"].(string)
			if seen[id] {
				t.Fatalf("id %s listed twice", id)
			}
			seen[id] = true
		}
		next, has := r.body["nextCursor"]
		if !has {
			if len(items) != 1 {
				t.Fatalf("last page has %d items, want 1", len(items))
			}
			break
		}
		if len(items) != 2 {
			t.Fatalf("page %d has %d items, want 2", pages, len(items))
		}
		cursor, _ = next.(string)
		if cursor == "" || pages > 5 {
			t.Fatalf("bad nextCursor %v after %d pages", next, pages)
		}
	}
	if pages != 3 || len(seen) != len(want) {
		t.Fatalf("pages=%d seen=%d, want 3 pages, %d ids", pages, len(seen), len(want))
	}
	for id := range want {
		if !seen[id] {
			t.Fatalf("id %s missing from pages", id)
		}
	}
	if seen[otherID] {
		t.Fatalf("other workspace's webhook leaked into acme's list")
	}
	o := dataArray(t, e.do("GET", "/api/webhook", keyOther, "", nil))
	if len(o) != 1 || o[0]["id"] != otherID {
		t.Fatalf("other workspace list = %v", o)
	}
}
