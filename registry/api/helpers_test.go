package api

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sort"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/webhookd/webhookd/registry"
)

const (
	keyAcme  = "key-acme-6f1c2d9e8b7a"
	keyOther = "key-other-0a9b8c7d6e5f"
	wsAcme   = "acme"
	wsOther  = "other"
)

// testEnv is a Server over a real bbolt store, served by httptest.
type testEnv struct {
	t     *testing.T
	srv   *Server
	store *registry.Store
	reg   *prometheus.Registry
	url   string
}

func newTestEnv(t *testing.T, mutate ...func(*Config)) *testEnv {
	t.Helper()
	store, err := registry.Open(registry.Config{Path: filepath.Join(t.TempDir(), "webhookd.db")})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() {
		if err := store.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	reg := prometheus.NewRegistry()
	cfg := Config{
		Store:      store,
		Keys:       registry.NewKeyRing([]registry.APIKey{{Workspace: wsAcme, Key: keyAcme}, {Workspace: wsOther, Key: keyOther}}, nil),
		Gatherer:   reg,
		Registerer: reg,
	}
	for _, m := range mutate {
		m(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	return &testEnv{t: t, srv: srv, store: store, reg: reg, url: hs.URL}
}

type response struct {
	status int
	header http.Header
	raw    []byte
	body   map[string]any // nil if the body is not a JSON object
}

// do sends a request; key "" sends no key header, ctype "" no Content-Type.
func (e *testEnv) do(method, path, key, ctype string, body io.Reader) response {
	e.t.Helper()
	req, err := http.NewRequest(method, e.url+path, body)
	if err != nil {
		e.t.Fatalf("new request: %v", err)
	}
	if key != "" {
		req.Header.Set(apiKeyHeader, key)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	r := response{status: resp.StatusCode, header: resp.Header, raw: raw}
	_ = json.Unmarshal(raw, &r.body)
	return r
}

// send sends a prepared request.
func (e *testEnv) send(req *http.Request) response {
	e.t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("%s %s: read body: %v", req.Method, req.URL.Path, err)
	}
	r := response{status: resp.StatusCode, header: resp.Header, raw: raw}
	_ = json.Unmarshal(raw, &r.body)
	return r
}

// slogJSON is a debug-level JSON logger writing to w.
func slogJSON(w io.Writer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// doHeader is do with extra request headers and no body.
func (e *testEnv) doHeader(method, path, key string, headers map[string]string) response {
	e.t.Helper()
	req, err := http.NewRequest(method, e.url+path, nil)
	if err != nil {
		e.t.Fatalf("new request: %v", err)
	}
	if key != "" {
		req.Header.Set(apiKeyHeader, key)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := response{status: resp.StatusCode, header: resp.Header, raw: raw}
	_ = json.Unmarshal(raw, &r.body)
	return r
}

// doQuiet sends a request from any goroutine and returns only the status
// (0 on a transport error); it never fails the test.
func (e *testEnv) doQuiet(method, path, key string, body io.Reader) int {
	req, err := http.NewRequest(method, e.url+path, body)
	if err != nil {
		return 0
	}
	if key != "" {
		req.Header.Set(apiKeyHeader, key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func (e *testEnv) create(key string, body string) response {
	e.t.Helper()
	return e.do(http.MethodPost, "/api/webhook", key, "application/json", bytes.NewBufferString(body))
}

// mustCreate registers a webhook and returns its data object.
func (e *testEnv) mustCreate(key, body string) map[string]any {
	e.t.Helper()
	r := e.create(key, body)
	if r.status != http.StatusOK {
		e.t.Fatalf("create %s: status %d body %s", body, r.status, r.raw)
	}
	return dataObject(e.t, r)
}

func dataObject(t *testing.T, r response) map[string]any {
	t.Helper()
	d, ok := r.body["data"].(map[string]any)
	if !ok {
		t.Fatalf("data is not an object: %s", r.raw)
	}
	return d
}

func dataArray(t *testing.T, r response) []map[string]any {
	t.Helper()
	arr, ok := r.body["data"].([]any)
	if !ok {
		t.Fatalf("data is not an array: %s", r.raw)
	}
	out := make([]map[string]any, len(arr))
	for i, v := range arr {
		m, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("data[%d] is not an object: %s", i, r.raw)
		}
		out[i] = m
	}
	return out
}

func keysOf(m map[string]any) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func sameKeys(m map[string]any, want ...string) bool {
	got := keysOf(m)
	sort.Strings(want)
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] != want[i] {
			return false
		}
	}
	return true
}

// wantError checks the error envelope shape, status and code.
func wantError(t *testing.T, r response, status int, code string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status = %d, want %d; body %s", r.status, status, r.raw)
	}
	if r.body == nil {
		t.Fatalf("body is not a JSON object: %q", r.raw)
	}
	if r.body["status"] != "error" || r.body["errorCode"] != code {
		t.Fatalf("envelope = %s, want status error, errorCode %s", r.raw, code)
	}
	for k := range r.body {
		if k != "status" && k != "errorCode" && k != "details" {
			t.Fatalf("unexpected top-level key %q in %s", k, r.raw)
		}
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type = %q", ct)
	}
}

func details(t *testing.T, r response) map[string]any {
	t.Helper()
	d, ok := r.body["details"].(map[string]any)
	if !ok {
		t.Fatalf("details missing or not an object: %s", r.raw)
	}
	return d
}
