package api

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/webhookd/webhookd/registry"
)

// stubTester answers every SendTest with res (or err) and remembers the
// webhooks it was given. The real Tester, the dispatcher, is tested end to
// end in package dispatcher.
type stubTester struct {
	mu  sync.Mutex
	got []registry.Webhook
	res TestResult
	err error
}

func (s *stubTester) SendTest(ctx context.Context, w registry.Webhook) (TestResult, error) {
	s.mu.Lock()
	s.got = append(s.got, w)
	s.mu.Unlock()
	return s.res, s.err
}

func TestTestWebhook(t *testing.T) {
	delivered := TestResult{Delivered: true, Status: 204, Duration: 42 * time.Millisecond, MessageID: "msg_0123456789abcdef0123456789abcdef"}
	refused := TestResult{Status: 503, Duration: time.Millisecond, Error: "5xx: HTTP 503", MessageID: "msg_0123456789abcdef0123456789abcdee"}
	cases := []struct {
		name   string
		tester Tester
		key    string
		status int
		code   string
		want   map[string]any
	}{
		{name: "delivered", tester: &stubTester{res: delivered}, key: keyAcme, status: 200,
			want: map[string]any{"delivered": true, "status": 204.0, "durationMs": 42.0, "error": "", "webhookId": delivered.MessageID}},
		{name: "refused by the endpoint", tester: &stubTester{res: refused}, key: keyAcme, status: 200,
			want: map[string]any{"delivered": false, "status": 503.0, "durationMs": 1.0, "error": "5xx: HTTP 503", "webhookId": refused.MessageID}},
		{name: "tester failed", tester: &stubTester{err: errors.New("boom")}, key: keyAcme, status: 500, code: codeInternal},
		{name: "no tester", key: keyAcme, status: 501, code: codeTestUnavailable},
		{name: "other workspace", tester: &stubTester{res: delivered}, key: keyOther, status: 404, code: codeNotFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, func(c *Config) { c.Tester = tc.tester })
			id := e.mustCreate(keyAcme, validBody)["id"].(string)
			// Disabled webhooks can be tested too.
			if r := e.do(http.MethodPatch, "/api/webhook/"+id, keyAcme, "application/json", strings.NewReader(`{"enabled":false}`)); r.status != 200 {
				t.Fatalf("disable: %d %s", r.status, r.raw)
			}
			r := e.do(http.MethodPost, "/api/webhook/"+id+"/test", tc.key, "", nil)
			if tc.code != "" {
				wantError(t, r, tc.status, tc.code)
				return
			}
			d := dataObject(t, r)
			if !sameKeys(d, "delivered", "status", "durationMs", "error", "webhookId") {
				t.Fatalf("answer keys %v", keysOf(d))
			}
			for k, v := range tc.want {
				if d[k] != v {
					t.Errorf("%s = %v, want %v", k, d[k], v)
				}
			}
			st := tc.tester.(*stubTester)
			if len(st.got) != 1 || st.got[0].ID != id || !st.got[0].Disabled || st.got[0].Secret == "" {
				t.Fatalf("the tester got %+v, want the stored (disabled) webhook with its secret", st.got)
			}
		})
	}
}

// TestTestWebhookRateLimited: five tests in a row per webhook, then 429
// with Retry-After; another webhook has its own budget.
func TestTestWebhookRateLimited(t *testing.T) {
	st := &stubTester{res: TestResult{Delivered: true, Status: 200, MessageID: "msg_0123456789abcdef0123456789abcdef"}}
	e := newTestEnv(t, func(c *Config) { c.Tester = st })
	a := e.mustCreate(keyAcme, validBody)["id"].(string)
	b := e.mustCreate(keyAcme, validBody)["id"].(string)
	for i := range testBurst {
		if r := e.do(http.MethodPost, "/api/webhook/"+a+"/test", keyAcme, "", nil); r.status != 200 {
			t.Fatalf("test %d: %d %s", i+1, r.status, r.raw)
		}
	}
	r := e.do(http.MethodPost, "/api/webhook/"+a+"/test", keyAcme, "", nil)
	wantError(t, r, http.StatusTooManyRequests, codeRateLimited)
	if secs, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || secs < 1 {
		t.Fatalf("Retry-After = %q", r.header.Get("Retry-After"))
	}
	if r := e.do(http.MethodPost, "/api/webhook/"+b+"/test", keyAcme, "", nil); r.status != 200 {
		t.Fatalf("another webhook was limited too: %d %s", r.status, r.raw)
	}
	if len(st.got) != testBurst+1 {
		t.Fatalf("the tester ran %d times, want %d", len(st.got), testBurst+1)
	}
}

// TestTestLimiter: refill, and the bound on the webhooks it remembers.
func TestTestLimiter(t *testing.T) {
	l := newTestLimiter()
	now := time.Now()
	for i := range testBurst {
		if ok, _ := l.allow("wh_a", now); !ok {
			t.Fatalf("token %d refused", i+1)
		}
	}
	ok, wait := l.allow("wh_a", now)
	if ok || wait <= 0 || wait > time.Second {
		t.Fatalf("over the burst: ok %v wait %v", ok, wait)
	}
	if ok, _ := l.allow("wh_a", now.Add(time.Second)); !ok {
		t.Fatal("no token a second later")
	}
	// The map stays bounded: refilled buckets go first, then any.
	for i := range testMaxHooks + 100 {
		l.allow("wh_"+strconv.Itoa(i), now.Add(time.Duration(i)*time.Millisecond))
	}
	if n := len(l.byID); n > testMaxHooks {
		t.Fatalf("the limiter remembers %d webhooks, bound %d", n, testMaxHooks)
	}
}
