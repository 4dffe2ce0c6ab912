package api

import (
	"bytes"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	v3 "github.com/pb33f/libopenapi/datamodel/high/v3"
	"github.com/pb33f/libopenapi/orderedmap"

	"github.com/webhookd/webhookd/events"
	"github.com/webhookd/webhookd/registry"
	"github.com/webhookd/webhookd/registry/health"
)

// openAPIModel parses the embedded document into libopenapi's 3.1 model.
func openAPIModel(t *testing.T) (libopenapi.Document, *v3.Document) {
	t.Helper()
	doc, err := libopenapi.NewDocument(openAPIDocument)
	if err != nil {
		t.Fatalf("parse openapi.yaml: %v", err)
	}
	m, err := doc.BuildV3Model()
	if err != nil {
		t.Fatalf("openapi.yaml does not build a 3.x model: %v", err)
	}
	return doc, &m.Model
}

// TestOpenAPIDocumentIsValid: the document is OpenAPI 3.1 and valid
// against the OpenAPI 3.1 schema (libopenapi-validator checks it with the
// specification's own JSON Schema), with every $ref resolved.
func TestOpenAPIDocumentIsValid(t *testing.T) {
	doc, m := openAPIModel(t)
	if v := doc.GetVersion(); !strings.HasPrefix(v, "3.1.") {
		t.Fatalf("openapi version %q, want 3.1.x", v)
	}
	if m.Components == nil || m.Components.SecuritySchemes.GetOrZero("apiKey") == nil {
		t.Fatal("no apiKey security scheme")
	}
	if ss := m.Components.SecuritySchemes.GetOrZero("apiKey"); ss.Type != "apiKey" || ss.In != "header" || ss.Name != apiKeyHeader {
		t.Fatalf("security scheme %+v, want an apiKey in header %s", ss, apiKeyHeader)
	}
	v, errs := validator.NewValidator(doc)
	if len(errs) > 0 {
		t.Fatalf("validator: %v", errs)
	}
	if ok, verrs := v.ValidateDocument(); !ok {
		for _, e := range verrs {
			t.Errorf("%v", e)
			for _, f := range e.SchemaValidationErrors {
				t.Errorf("  %v", f)
			}
		}
		t.FailNow()
	}
}

// TestOpenAPIDocumentIsValidCatchesMistakes: the validator used above
// does refuse broken documents (so that a pass means something).
func TestOpenAPIDocumentIsValidCatchesMistakes(t *testing.T) {
	broken := map[string]string{
		"response without description": strings.Replace(string(openAPIDocument),
			"          description: The process serves HTTP.\n", "", 1),
		"wrong parameter location": strings.Replace(string(openAPIDocument), "      in: path\n", "      in: body\n", 1),
		"unknown top-level member": string(openAPIDocument) + "bogus: 1\n",
	}
	for name, text := range broken {
		t.Run(name, func(t *testing.T) {
			if text == string(openAPIDocument) {
				t.Fatal("the mutation did not apply")
			}
			// Each mutation still parses and builds: it is the check
			// against the 3.1 schema that must refuse it.
			doc, err := libopenapi.NewDocument([]byte(text))
			if err != nil {
				t.Fatal(err)
			}
			v, errs := validator.NewValidator(doc)
			if len(errs) > 0 {
				t.Fatal(errs)
			}
			if ok, _ := v.ValidateDocument(); ok {
				t.Fatal("a broken document validated")
			}
		})
	}
}

// TestOpenAPIMatchesTheRoutes: every route the server registers (method
// and pattern, from routeTable, which routes() registers) is an operation
// of the document, and every operation of the document is a registered
// route; an authenticated route requires the apiKey scheme and an
// unauthenticated one says security: [].
func TestOpenAPIMatchesTheRoutes(t *testing.T) {
	_, m := openAPIModel(t)
	documented := map[string]*v3.Operation{}
	for path, item := range m.Paths.PathItems.FromOldest() {
		for method, op := range item.GetOperations().FromOldest() {
			documented[strings.ToUpper(method)+" "+path] = op
		}
	}
	e := newTestEnv(t)
	registered := map[string]bool{}
	for _, rt := range e.srv.routeTable() {
		key := rt.method + " " + rt.path
		registered[key] = true
		op, ok := documented[key]
		if !ok {
			t.Errorf("route %s is not in openapi.yaml", key)
			continue
		}
		// An operation's own security replaces the document's; a key is
		// required when there is a requirement and none of them is the
		// empty (anonymous) one.
		reqs := m.Security
		if op.Security != nil {
			reqs = op.Security
		}
		requiresKey := len(reqs) > 0
		for _, r := range reqs {
			if r == nil || r.ContainsEmptyRequirement || orderedmap.Len(r.Requirements) == 0 {
				requiresKey = false
			}
		}
		if requiresKey != rt.authed {
			t.Errorf("%s: the document says authenticated %v, the server %v", key, requiresKey, rt.authed)
		}
		// The pattern is live: the mux answers it (not 404/405).
		req, _ := http.NewRequest(rt.method, strings.NewReplacer("{id}", "wh_x", "{failureId}", "f").Replace(rt.path), nil)
		if _, pattern := e.srv.mux.Handler(req); pattern != key {
			t.Errorf("the mux does not serve %s (got %q)", key, pattern)
		}
	}
	for key := range documented {
		if !registered[key] {
			t.Errorf("openapi.yaml documents %s, which the server does not register", key)
		}
	}
	if len(documented) != len(registered) {
		t.Errorf("%d documented operations, %d registered routes", len(documented), len(registered))
	}
}

// errorCodes lists the values of the code* constants of this package's
// source: every error code the API can answer.
func errorCodes(t *testing.T) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "envelope.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var codes []string
	ast.Inspect(f, func(n ast.Node) bool {
		vs, ok := n.(*ast.ValueSpec)
		if !ok {
			return true
		}
		for i, name := range vs.Names {
			if !strings.HasPrefix(name.Name, "code") || i >= len(vs.Values) {
				continue
			}
			if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
				v, _ := strconv.Unquote(lit.Value)
				codes = append(codes, v)
			}
		}
		return true
	})
	slices.Sort(codes)
	return codes
}

// TestOpenAPIListsEveryErrorCode: the ErrorCode schema enumerates exactly
// the codes the API defines, and every code but the router's own
// (METHOD_NOT_ALLOWED) is named by at least one documented answer.
func TestOpenAPIListsEveryErrorCode(t *testing.T) {
	_, m := openAPIModel(t)
	codes := errorCodes(t)
	if len(codes) < 17 {
		t.Fatalf("found only %d codes in envelope.go: %v", len(codes), codes)
	}
	schema := m.Components.Schemas.GetOrZero("ErrorCode").Schema()
	var documented []string
	for _, n := range schema.Enum {
		documented = append(documented, n.Value)
	}
	slices.Sort(documented)
	if !slices.Equal(codes, documented) {
		t.Fatalf("ErrorCode enum %v\n   codes in envelope.go %v", documented, codes)
	}
	text := string(openAPIDocument)
	for _, c := range codes {
		if c == codeMethodNotAllowed {
			continue
		}
		if strings.Count(text, c) < 2 { // the enum, and an answer
			t.Errorf("no documented answer names %s", c)
		}
	}
}

func TestServeOpenAPI(t *testing.T) {
	e := newTestEnv(t)
	r := e.do(http.MethodGet, "/openapi.yaml", "", "", nil) // no key: unauthenticated
	if r.status != http.StatusOK || r.header.Get("Content-Type") != "application/yaml" {
		t.Fatalf("GET /openapi.yaml: %d %q", r.status, r.header.Get("Content-Type"))
	}
	if string(r.raw) != string(openAPIDocument) {
		t.Fatal("served document differs from the embedded one")
	}
	if _, err := libopenapi.NewDocument(r.raw); err != nil {
		t.Fatalf("served document does not parse: %v", err)
	}
	wantError(t, e.do(http.MethodPost, "/openapi.yaml", "", "application/json", nil), http.StatusMethodNotAllowed, codeMethodNotAllowed)
}

// TestOpenAPIAnswersConform drives a server (real bbolt, real events
// stream) through every operation and through most documented error
// answers, and checks each answer — status, headers, body — against the
// document with libopenapi-validator, and each well-formed request too.
func TestOpenAPIAnswersConform(t *testing.T) {
	doc, _ := openAPIModel(t)
	v, errs := validator.NewValidator(doc)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	book := newHealthBook()
	var ready atomic.Bool
	tester := &stubTester{res: TestResult{Status: 503, Duration: 3 * time.Millisecond, Error: "5xx: HTTP 503",
		MessageID: "msg_0123456789abcdef0123456789abcdef"}}
	e := newPublishEnv(t, 0, 0, func(c *Config) {
		c.Health = book
		c.Tester = tester
		c.Ready = func() error {
			if !ready.Load() {
				return errors.New("NATS is not connected")
			}
			return nil
		}
	})
	first := e.mustCreate(keyAcme, validBody)
	id := first["id"].(string)
	e.mustCreate(keyAcme, `{"url":"https://hooks.example.com/2","eventType":"workflowRun.failed"}`)
	now := time.Now()
	book.set(id, health.Record{State: health.CircuitOpen, ConsecutiveFailures: 6, LastSuccessAt: now.Add(-time.Hour),
		LastFailureAt: now, LastErrorClass: "5xx", LastStatus: 503, OpenUntil: now.Add(time.Minute)})
	if err := e.store.RecordFailure(t.Context(), registry.Failure{ID: "msg_0123456789abcdef0123456789abcdef", WebhookID: id,
		Workspace: wsAcme, EventID: "acme:r-1", EventType: events.WorkflowRunCompleted, Subject: "events.acme.workflowRun.completed",
		Attempts: 29, LastStatus: 500, LastError: "500 Internal Server Error", Reason: "max_age",
		FirstAttemptAt: now.Add(-72 * time.Hour), LastAttemptAt: now, Body: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	const js = "application/json"
	hook := "/api/webhook/" + id
	type call struct {
		name           string
		method, path   string
		key, ctype     string
		headers        map[string]string
		body           string
		status         int
		requestIsValid bool
		before         func()
	}
	calls := []call{
		{name: "create", method: "POST", path: "/api/webhook", key: keyAcme, ctype: js,
			body: `{"url":"https://hooks.example.com/3","eventType":"workflowRun.started","description":"third"}`, status: 200, requestIsValid: true},
		{name: "create: not JSON", method: "POST", path: "/api/webhook", key: keyAcme, ctype: js, body: `{`, status: 400},
		{name: "create: wrong media type", method: "POST", path: "/api/webhook", key: keyAcme, ctype: "text/plain", body: `{}`, status: 400},
		{name: "create: invalid", method: "POST", path: "/api/webhook", key: keyAcme, ctype: js, body: `{"url":"x"}`, status: 422},
		{name: "create: too large", method: "POST", path: "/api/webhook", key: keyAcme, ctype: js,
			body: `{"url":"` + strings.Repeat("x", 1<<20) + `"}`, status: 413},
		{name: "create: no key", method: "POST", path: "/api/webhook", ctype: js, body: validBody, status: 401},
		{name: "list, first page", method: "GET", path: "/api/webhook?limit=1", key: keyAcme, status: 200, requestIsValid: true},
		{name: "list, all", method: "GET", path: "/api/webhook", key: keyAcme, status: 200, requestIsValid: true},
		{name: "list: bad limit", method: "GET", path: "/api/webhook?limit=0", key: keyAcme, status: 400},
		{name: "list: bad cursor", method: "GET", path: "/api/webhook?cursor=%21", key: keyAcme, status: 400},
		{name: "get, circuit open", method: "GET", path: hook, key: keyAcme, status: 200, requestIsValid: true},
		{name: "get: other workspace", method: "GET", path: hook, key: keyOther, status: 404, requestIsValid: true},
		{name: "patch", method: "PATCH", path: hook, key: keyAcme, ctype: js,
			body: `{"description":"billing","workflowId":null,"eventType":"workflowRun.failed"}`, status: 200, requestIsValid: true},
		{name: "patch: disable", method: "PATCH", path: hook, key: keyAcme, ctype: mergePatchType, body: `{"enabled":false}`,
			status: 200, requestIsValid: true},
		{name: "get, disabled", method: "GET", path: hook, key: keyAcme, status: 200, requestIsValid: true},
		{name: "patch: unknown field", method: "PATCH", path: hook, key: keyAcme, ctype: js, body: `{"secret":"x"}`, status: 400},
		{name: "patch: no fields", method: "PATCH", path: hook, key: keyAcme, ctype: js, body: `{}`, status: 422},
		{name: "patch: invalid", method: "PATCH", path: hook, key: keyAcme, ctype: js, body: `{"url":"http://127.0.0.1/"}`, status: 422},
		{name: "patch: unknown id", method: "PATCH", path: "/api/webhook/wh_none", key: keyAcme, ctype: js, body: `{"enabled":true}`,
			status: 404},
		{name: "secret", method: "GET", path: hook + "/secret", key: keyAcme, status: 200, requestIsValid: true},
		{name: "rotate, default grace", method: "POST", path: hook + "/rotate-secret", key: keyAcme, status: 200, requestIsValid: true},
		{name: "secret, in grace", method: "GET", path: hook + "/secret", key: keyAcme, status: 200, requestIsValid: true},
		{name: "rotate, grace", method: "POST", path: hook + "/rotate-secret", key: keyAcme, ctype: js, body: `{"grace":"1h"}`,
			status: 200, requestIsValid: true},
		{name: "rotate: grace too long", method: "POST", path: hook + "/rotate-secret", key: keyAcme, ctype: js,
			body: `{"grace":"400h"}`, status: 422, requestIsValid: true},
		{name: "rotate: unknown field", method: "POST", path: hook + "/rotate-secret", key: keyAcme, ctype: js,
			body: `{"grace":"1h","x":1}`, status: 400},
		{name: "rotate: not JSON", method: "POST", path: hook + "/rotate-secret", key: keyAcme, ctype: js, body: `{`, status: 400},
		{name: "rotate: unknown id", method: "POST", path: "/api/webhook/wh_none/rotate-secret", key: keyAcme, status: 404},
		{name: "test", method: "POST", path: hook + "/test", key: keyAcme, status: 200, requestIsValid: true},
		{name: "test: unknown id", method: "POST", path: "/api/webhook/wh_none/test", key: keyAcme, status: 404},
		{name: "enable", method: "POST", path: hook + "/enable", key: keyAcme, status: 200, requestIsValid: true},
		{name: "failures", method: "GET", path: hook + "/failures?limit=10", key: keyAcme, status: 200, requestIsValid: true},
		{name: "failures: bad limit", method: "GET", path: hook + "/failures?limit=x", key: keyAcme, status: 400},
		{name: "retry without a dispatcher", method: "POST", path: hook + "/failures/msg_0123456789abcdef0123456789abcdef/retry",
			key: keyAcme, status: 501, requestIsValid: true},
		{name: "publish, event object", method: "POST", path: "/api/events", key: keyAcme, ctype: js,
			headers: map[string]string{idempotencyKeyHeader: "r-1"}, body: `{"type":"workflowRun.completed","workflowId":"WFCG-1","x":1}`,
			status: 202, requestIsValid: true},
		{name: "publish, simple form, duplicate", method: "POST", path: "/api/events", key: keyAcme, ctype: js,
			headers: map[string]string{idempotencyKeyHeader: "r-1"}, body: `{"eventType":"workflowRun.completed","payload":{"a":1}}`,
			status: 202, requestIsValid: true},
		{name: "publish: bad key", method: "POST", path: "/api/events", key: keyAcme, ctype: js,
			headers: map[string]string{idempotencyKeyHeader: "é"}, body: `{"type":"workflowRun.completed"}`, status: 400},
		{name: "publish: unknown type", method: "POST", path: "/api/events", key: keyAcme, ctype: js,
			body: `{"type":"workflowRun.paused"}`, status: 422},
		{name: "publish: too large", method: "POST", path: "/api/events", key: keyAcme, ctype: js,
			body: `{"type":"workflowRun.completed","x":"` + strings.Repeat("x", events.DefaultMaxBytes) + `"}`, status: 413},
		{name: "delete", method: "DELETE", path: hook, key: keyAcme, status: 200, requestIsValid: true},
		{name: "delete again", method: "DELETE", path: hook, key: keyAcme, status: 404, requestIsValid: true},
		{name: "healthz", method: "GET", path: "/healthz", status: 200, requestIsValid: true},
		{name: "readyz: not ready", method: "GET", path: "/readyz", status: 503, requestIsValid: true},
		{name: "readyz", method: "GET", path: "/readyz", status: 200, requestIsValid: true, before: func() { ready.Store(true) }},
		{name: "metrics", method: "GET", path: "/metrics", status: 200, requestIsValid: true},
		{name: "openapi", method: "GET", path: "/openapi.yaml", status: 200, requestIsValid: true},
	}
	// Test events, right after the first, until the webhook's budget is
	// spent: the last one is a 429.
	at := slices.IndexFunc(calls, func(c call) bool { return c.name == "test" }) + 1
	for i := range testBurst {
		status := http.StatusOK
		if i == testBurst-1 {
			status = http.StatusTooManyRequests
		}
		calls = slices.Insert(calls, at+i, call{name: "test again " + strconv.Itoa(i), method: "POST", path: hook + "/test",
			key: keyAcme, status: status, requestIsValid: true})
	}
	// Failed authentications until the client's budget for this key is
	// spent: the last one is a 429.
	for i := range authFailBurst + 1 {
		status := http.StatusUnauthorized
		if i == authFailBurst {
			status = http.StatusTooManyRequests
		}
		calls = append(calls, call{name: "bad key " + strconv.Itoa(i), method: "GET", path: "/api/webhook",
			key: "not-a-key-0000000000", status: status})
	}
	// Negative controls: the validator does catch an answer that drifted
	// from the document (an undocumented member, status or code).
	get := func() *http.Request { r, _ := http.NewRequest("GET", e.url+"/api/webhook/"+id, nil); return r }
	drifted := map[string]struct {
		status int
		body   string
	}{
		"undocumented member": {200, `{"status":"success","data":{"id":"` + id + `","url":"https://x.example/","eventType":"workflowRun.failed",` +
			`"workflowId":"","createdAt":"2026-01-01T00:00:00Z","enabled":true,"health":{"state":"healthy"},"bogus":1}}`},
		"undocumented status":       {418, `{"status":"error","errorCode":"INTERNAL"}`},
		"wrong code for the status": {404, `{"status":"error","errorCode":"INVALID_JSON"}`},
	}
	for name, d := range drifted {
		resp := &http.Response{StatusCode: d.status, Header: http.Header{"Content-Type": {js}},
			Body: io.NopCloser(strings.NewReader(d.body)), Request: get()}
		if ok, _ := v.ValidateHttpResponse(get(), resp); ok {
			t.Fatalf("negative control %q validated", name)
		}
	}

	for _, c := range calls {
		if c.before != nil {
			c.before()
		}
		newReq := func() *http.Request {
			req, err := http.NewRequest(c.method, e.url+c.path, strings.NewReader(c.body))
			if err != nil {
				t.Fatal(err)
			}
			if c.key != "" {
				req.Header.Set(apiKeyHeader, c.key)
			}
			if c.ctype != "" {
				req.Header.Set("Content-Type", c.ctype)
			}
			for k, v := range c.headers {
				req.Header.Set(k, v)
			}
			return req
		}
		r := e.send(newReq())
		if r.status != c.status {
			t.Fatalf("%s: status %d, want %d: %s", c.name, r.status, c.status, r.raw)
		}
		if r.header.Get(requestIDHeader) == "" {
			t.Fatalf("%s: no %s", c.name, requestIDHeader)
		}
		resp := &http.Response{StatusCode: r.status, Header: r.header, Body: io.NopCloser(bytes.NewReader(r.raw)),
			Request: newReq()}
		ok, verrs := v.ValidateHttpResponse(newReq(), resp)
		if c.requestIsValid {
			reqOK, reqErrs := v.ValidateHttpRequest(newReq())
			ok, verrs = ok && reqOK, append(verrs, reqErrs...)
		}
		if !ok {
			for _, ve := range verrs {
				t.Errorf("%s: %v", c.name, ve)
				for _, f := range ve.SchemaValidationErrors {
					t.Errorf("  %v", f)
				}
			}
			t.Fatalf("%s: %d %s", c.name, r.status, truncate(r.raw, 400))
		}
	}
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}
