package api

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestHealthAndReadiness(t *testing.T) {
	var notReady atomic.Pointer[error]
	errNATS := errors.New("nats: not connected")
	notReady.Store(&errNATS)
	e := newTestEnv(t, func(c *Config) {
		c.Ready = func() error {
			if p := notReady.Load(); p != nil {
				return *p
			}
			return nil
		}
	})

	h := e.do("GET", "/healthz", "", "", nil)
	if h.status != http.StatusOK || h.body["status"] != "success" {
		t.Fatalf("healthz: %d %s", h.status, h.raw)
	}

	r := e.do("GET", "/readyz", "", "", nil)
	wantError(t, r, http.StatusServiceUnavailable, codeNotReady)
	if details(t, r)["reason"] != "nats: not connected" {
		t.Fatalf("reason: %s", r.raw)
	}

	notReady.Store(nil)
	r = e.do("GET", "/readyz", "", "", nil)
	if r.status != http.StatusOK || string(r.raw) != `{"status":"success","data":{"ready":true}}`+"\n" {
		t.Fatalf("ready: %d %q", r.status, r.raw)
	}
}

// TestReadyzWarnings: a warning (a stream nearly full) is shown on a ready
// answer and does not make the instance unready.
func TestReadyzWarnings(t *testing.T) {
	var warn atomic.Bool
	e := newTestEnv(t, func(c *Config) {
		c.Warnings = func() []string {
			if warn.Load() {
				return []string{"stream nearly full: WEBHOOKD_EVENTS at 96.0%"}
			}
			return nil
		}
	})
	if r := e.do("GET", "/readyz", "", "", nil); r.status != http.StatusOK || strings.Contains(string(r.raw), "warnings") {
		t.Fatalf("no warning: %d %s", r.status, r.raw)
	}
	warn.Store(true)
	r := e.do("GET", "/readyz", "", "", nil)
	if r.status != http.StatusOK || !strings.Contains(string(r.raw), `"warnings":["stream nearly full: WEBHOOKD_EVENTS at 96.0%"]`) {
		t.Fatalf("warning: %d %s", r.status, r.raw)
	}
}

func TestMetricsEndpoint(t *testing.T) {
	e := newTestEnv(t)
	e.do("GET", "/healthz", "", "", nil)
	e.do("GET", "/api/webhook", "", "", nil)
	r := e.do("GET", "/metrics", "", "", nil)
	if r.status != http.StatusOK {
		t.Fatalf("metrics: %d", r.status)
	}
	for _, want := range []string{`webhookd_api_requests_total{code="2xx"}`, `webhookd_api_requests_total{code="4xx"} 1`, "webhookd_api_auth_failures_total 1"} {
		if !strings.Contains(string(r.raw), want) {
			t.Fatalf("metrics lack %q:\n%s", want, r.raw)
		}
	}
	problems, err := testutil.GatherAndLint(e.reg)
	if err != nil || len(problems) > 0 {
		t.Fatalf("metric lint: %v %v", err, problems)
	}

	noGatherer := newTestEnv(t, func(c *Config) { c.Gatherer = nil })
	wantError(t, noGatherer.do("GET", "/metrics", "", "", nil), http.StatusNotFound, codeNotFound)
}

func TestPanicBecomesInternalEnvelope(t *testing.T) {
	e := newTestEnv(t)
	tests := []struct {
		name    string
		handler http.HandlerFunc
		status  int
		broken  bool // connection cut instead of an envelope
	}{
		{"before writing", func(http.ResponseWriter, *http.Request) { panic("boom") }, 500, false},
		{"after writing", func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write([]byte("partial"))
			_ = http.NewResponseController(w).Flush()
			panic("boom")
		}, 200, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hs := httptest.NewServer(e.srv.observe(e.srv.recoverPanics(tc.handler)))
			defer hs.Close()
			resp, err := http.Get(hs.URL)
			if err != nil {
				t.Fatal(err)
			}
			raw, readErr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if tc.broken {
				if readErr == nil {
					t.Fatalf("body read cleanly (%q); want the connection cut", raw)
				}
				return
			}
			if string(raw) != `{"status":"error","errorCode":"INTERNAL"}`+"\n" {
				t.Fatalf("body %q", raw)
			}
		})
	}
	if got := testutil.ToFloat64(e.srv.metrics.requests.WithLabelValues("5xx")); got != 1 {
		t.Fatalf("5xx count = %v, want 1", got)
	}
}

func TestRunServesAndStopsOnCancel(t *testing.T) {
	e := newTestEnv(t)
	before := runtime.NumGoroutine()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.srv.Run(ctx, ln) }()

	client := &http.Client{Transport: &http.Transport{}}
	resp, err := client.Get("http://" + ln.Addr().String() + "/healthz")
	if err != nil {
		t.Fatalf("request to Run's listener: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz via Run: %d", resp.StatusCode)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after cancel: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after ctx cancel")
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Fatal("listener still accepting after Run returned")
	}
	client.CloseIdleConnections()

	// Everything Run started must be gone (poll: exiting goroutines need a
	// moment to be descheduled on a busy machine).
	deadline := time.Now().Add(20 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines: %d before, %d after\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRunReturnsListenerError(t *testing.T) {
	e := newTestEnv(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	err = e.srv.Run(context.Background(), ln)
	if err == nil || !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Run on a closed listener = %v, want net.ErrClosed", err)
	}
}
