package api

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/webhookd/webhookd/registry"
)

// Tester sends a webhook a test event now and reports how its endpoint
// answered (dispatcher.Dispatcher satisfies it). It must not record a
// delivery or a failure, nor touch the webhook's circuit or health.
type Tester interface {
	SendTest(ctx context.Context, w registry.Webhook) (TestResult, error)
}

// TestResult is the outcome of one test delivery.
type TestResult struct {
	// Delivered: the endpoint answered 2xx.
	Delivered bool
	// Status is the HTTP status, 0 when no answer came.
	Status int
	// Duration is how long the attempt took.
	Duration time.Duration
	// Error is "<class>: <message>" (class as the delivery metrics name
	// it: timeout, network, blocked, 4xx, ...), "" when delivered. It
	// never holds the URL.
	Error string
	// MessageID is the webhook-id header the test was sent with.
	MessageID string
	// Response is the start of the answer's body (1 KiB), when it is text.
	Response string
}

// testView is the answer of POST /api/webhook/{id}/test.
type testView struct {
	Delivered  bool   `json:"delivered"`
	Status     int    `json:"status"`
	DurationMs int64  `json:"durationMs"`
	Error      string `json:"error"`
	WebhookID  string `json:"webhookId"`
	Response   string `json:"response,omitempty"`
}

// Test sends per webhook: one a second, bursts of five.
const (
	testRate     = rate.Limit(1)
	testBurst    = 5
	testMaxHooks = 10_000 // limiters kept; full, idle ones are dropped first
)

// testLimiter is a bounded set of per-webhook token buckets.
type testLimiter struct {
	mu   sync.Mutex
	byID map[string]*rate.Limiter
}

func newTestLimiter() *testLimiter { return &testLimiter{byID: make(map[string]*rate.Limiter)} }

// allow takes a token of id's bucket at now, or reports how long until
// one is there.
func (l *testLimiter) allow(id string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	lim, ok := l.byID[id]
	if !ok {
		if len(l.byID) >= testMaxHooks {
			l.evict(now)
		}
		lim = rate.NewLimiter(testRate, testBurst)
		l.byID[id] = lim
	}
	r := lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// evict drops the buckets that have refilled (forgetting them changes no
// answer); if none has, an arbitrary one, so that the map stays bounded.
func (l *testLimiter) evict(now time.Time) {
	for id, lim := range l.byID {
		if lim.TokensAt(now) >= testBurst {
			delete(l.byID, id)
		}
	}
	for id := range l.byID {
		if len(l.byID) < testMaxHooks {
			return
		}
		delete(l.byID, id)
	}
}

// testWebhook sends the webhook a signed webhook.test event now and
// answers with the outcome (200 whether or not the endpoint accepted it).
// It works on disabled webhooks and open circuits alike, records nothing,
// and is limited per webhook (429 RATE_LIMITED, Retry-After set). The
// route takes no body.
func (s *Server) testWebhook(w http.ResponseWriter, r *http.Request) error {
	if s.tester == nil {
		return &apiError{Status: http.StatusNotImplemented, Code: codeTestUnavailable,
			Details: map[string]any{"reason": "this server cannot send test events"}}
	}
	id := r.PathValue("id")
	ws := workspaceFrom(r.Context())
	hook, err := s.store.Get(r.Context(), ws, id)
	if err != nil {
		return fmt.Errorf("test webhook %s: %w", id, err)
	}
	if ok, wait := s.testLimits.allow(id, time.Now()); !ok {
		secs := max(int64((wait+time.Second-1)/time.Second), 1)
		w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
		return &apiError{Status: http.StatusTooManyRequests, Code: codeRateLimited,
			Details: map[string]any{"retryAfterSeconds": secs, "reason": "at most 5 test events in a row per webhook, then 1 a second"}}
	}
	res, err := s.tester.SendTest(r.Context(), hook)
	if err != nil {
		return fmt.Errorf("test webhook %s: %w", id, err)
	}
	s.log.InfoContext(r.Context(), "webhook test sent",
		"request_id", requestID(r.Context()), "workspace", ws, "webhook_id", id,
		"delivered", res.Delivered, "status", res.Status)
	writeSuccess(w, testView{Delivered: res.Delivered, Status: res.Status, DurationMs: res.Duration.Milliseconds(),
		Error: res.Error, WebhookID: res.MessageID, Response: res.Response}, "")
	return nil
}
