package api

import (
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestRepeatedBadKeysAreRateLimited(t *testing.T) {
	e := newTestEnv(t)
	// The per-key budget refills one token a second; a request takes
	// milliseconds, so 3*burst attempts reach the limit on any machine
	// short of a stalled one.
	const stale = "stale-key-0123456789"
	limitedAt := 0
	for i := 1; i <= 3*authFailBurst; i++ {
		r := e.do("GET", "/api/webhook", stale, "", nil)
		if r.status == http.StatusTooManyRequests {
			wantError(t, r, http.StatusTooManyRequests, codeRateLimited)
			secs, err := strconv.Atoi(r.header.Get("Retry-After"))
			if err != nil || secs < 1 || secs > 60 {
				t.Fatalf("Retry-After = %q", r.header.Get("Retry-After"))
			}
			limitedAt = i
			break
		}
		wantError(t, r, http.StatusUnauthorized, codeUnauthorized)
	}
	if limitedAt <= authFailBurst {
		t.Fatalf("limited at attempt %d; want after the first %d failures (0 = never)", limitedAt, authFailBurst)
	}
	// While that key is limited, a valid key from the same address is
	// served, and another wrong key still gets its own 401.
	if r := e.do("GET", "/api/webhook", keyAcme, "", nil); r.status != http.StatusOK {
		t.Fatalf("valid key while another key is limited: %d %s", r.status, r.raw)
	}
	wantError(t, e.do("GET", "/api/webhook", "another-wrong-key-42", "", nil), http.StatusUnauthorized, codeUnauthorized)
	// Unauthenticated operational endpoints are unaffected.
	if r := e.do("GET", "/healthz", "", "", nil); r.status != http.StatusOK {
		t.Fatalf("healthz while limited: %d", r.status)
	}

	m := string(e.do("GET", "/metrics", "", "", nil).raw)
	if !strings.Contains(m, "\nwebhookd_api_auth_failures_total "+strconv.Itoa(limitedAt)+"\n") {
		t.Fatalf("auth failure counter not %d:\n%s", limitedAt, m)
	}
	if !strings.Contains(m, "\nwebhookd_api_auth_rate_limited_total 1\n") {
		t.Fatalf("rate-limited counter not 1:\n%s", m)
	}
}

// TestScannerRotatingKeysIsLimitedPerAddress: a client presenting a new
// key every time gets a fresh per-key budget each time, so the address-wide
// budget is what stops it — and still never a valid key.
func TestScannerRotatingKeysIsLimitedPerAddress(t *testing.T) {
	e := newTestEnv(t)
	limitedAt := 0
	for i := 1; i <= 3*authAddrBurst; i++ {
		r := e.do("GET", "/api/webhook", "guess-"+strconv.Itoa(i)+"-0123456789", "", nil)
		if r.status == http.StatusTooManyRequests {
			limitedAt = i
			break
		}
		wantError(t, r, http.StatusUnauthorized, codeUnauthorized)
	}
	if limitedAt <= authAddrBurst {
		t.Fatalf("limited at attempt %d; want after the first %d failures (0 = never)", limitedAt, authAddrBurst)
	}
	if r := e.do("GET", "/api/webhook", keyOther, "", nil); r.status != http.StatusOK {
		t.Fatalf("valid key after the address's budget is spent: %d %s", r.status, r.raw)
	}
}

// TestValidKeyServedWhileAnotherClientHammers is the load-balancer case:
// every request arrives from one address; one tenant loops on a bad key
// while another uses a valid one, concurrently. The valid key is never
// refused, and a third tenant's one-off typo gets 401, not 429.
func TestValidKeyServedWhileAnotherClientHammers(t *testing.T) {
	e := newTestEnv(t)
	stop := make(chan struct{})
	var hammered, limited atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				r := e.doQuiet("GET", "/api/webhook", "revoked-key-of-tenant-b", nil)
				hammered.Add(1)
				if r == http.StatusTooManyRequests {
					limited.Add(1)
				}
			}
		})
	}
	defer func() { close(stop); wg.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for limited.Load() < 50 {
		if time.Now().After(deadline) {
			t.Fatalf("the hammering client was never limited (%d attempts)", hammered.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	for i := 0; i < 50; i++ {
		if r := e.do("GET", "/api/webhook", keyAcme, "", nil); r.status != http.StatusOK {
			t.Fatalf("valid key refused while another client hammers (attempt %d): %d %s", i, r.status, r.raw)
		}
	}
	wantError(t, e.do("GET", "/api/webhook", "tenant-c-typo-0123456789", "", nil), http.StatusUnauthorized, codeUnauthorized)
	t.Logf("hammer: %d attempts, %d answered 429; 50 valid requests served", hammered.Load(), limited.Load())
}

// TestForwardedClientsBehindTrustedProxy: with the proxy trusted, two
// clients behind it have separate budgets; without it, the header is
// ignored, so forging it does not escape the limit.
func TestForwardedClientsBehindTrustedProxy(t *testing.T) {
	const bad = "bad-key-0123456789abc"
	exhaust := func(e *testEnv, xff string) {
		t.Helper()
		for i := 0; i <= authFailBurst; i++ {
			e.doHeader("GET", "/api/webhook", bad, map[string]string{HeaderXForwardedFor: xff})
		}
	}
	trusted := newTestEnv(t, func(c *Config) { c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")} })
	exhaust(trusted, "198.51.100.1")
	if r := trusted.doHeader("GET", "/api/webhook", bad, map[string]string{HeaderXForwardedFor: "198.51.100.1"}); r.status != http.StatusTooManyRequests {
		t.Fatalf("client 1 behind the proxy not limited: %d", r.status)
	}
	if r := trusted.doHeader("GET", "/api/webhook", bad, map[string]string{HeaderXForwardedFor: "198.51.100.2"}); r.status != http.StatusUnauthorized {
		t.Fatalf("client 2 behind the proxy shares client 1's budget: %d", r.status)
	}

	untrusted := newTestEnv(t)
	exhaust(untrusted, "198.51.100.1")
	if r := untrusted.doHeader("GET", "/api/webhook", bad, map[string]string{HeaderXForwardedFor: "198.51.100.2"}); r.status != http.StatusTooManyRequests {
		t.Fatalf("a forged X-Forwarded-For escaped the limit without a trusted proxy: %d", r.status)
	}
}

func TestFailureLimiter(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	a := netip.MustParseAddr("192.0.2.1")
	b := netip.MustParseAddr("192.0.2.2")
	k1, k2 := keyID("k1"), keyID("k2")
	tests := []struct {
		name  string
		addr  netip.Addr
		key   uint64
		at    time.Duration
		limit bool
		wait  time.Duration
	}{
		{"1st failure", a, k1, 0, false, 0},
		{"2nd failure", a, k1, 0, false, 0},
		{"3rd failure", a, k1, 0, false, 0},
		{"key budget spent", a, k1, 0, true, time.Second},
		{"still spent, not charged", a, k1, 300 * time.Millisecond, true, time.Second},
		{"other key, same address", a, k2, 0, false, 0},
		{"same key, other address", b, k1, 0, false, 0},
		{"refilled", a, k1, 1100 * time.Millisecond, false, 0},
		{"address budget (5) spent by k1 x4 and k2", a, keyID("k3"), 1100 * time.Millisecond, true, 9 * time.Second},
	}
	l := newFailureLimiter(budget{3, time.Second}, budget{5, 10 * time.Second}, 100)
	for _, tc := range tests {
		wait, limited := l.fail(tc.addr, tc.key, t0.Add(tc.at))
		if limited != tc.limit || wait != tc.wait {
			t.Errorf("%s: limited=%v wait=%v, want %v %v", tc.name, limited, wait, tc.limit, tc.wait)
		}
	}
}

func TestFailureLimiterIsBounded(t *testing.T) {
	const maxClients = 1000
	t0 := time.Unix(1_700_000_000, 0)
	check := func(l *failureLimiter) {
		t.Helper()
		if k, a := l.sizes(); k > maxClients || a > maxClients {
			t.Fatalf("tables grew to %d, %d > %d", k, a, maxClients)
		}
	}
	tests := []struct {
		name string
		addr func(i int) netip.Addr
		key  func(i int) uint64
	}{
		{"rotating addresses", func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}) },
			func(int) uint64 { return 1 }},
		{"rotating keys from one address", func(int) netip.Addr { return netip.MustParseAddr("192.0.2.1") },
			func(i int) uint64 { return uint64(i) }},
		{"rotating both", func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}) },
			func(i int) uint64 { return uint64(i) * 7919 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := newFailureLimiter(budget{10, time.Second}, budget{100, time.Second}, maxClients)
			// All failing at once: nothing refills, so eviction must fall
			// back to dropping live entries rather than growing.
			for i := 0; i < 20*maxClients; i++ {
				l.fail(tc.addr(i), tc.key(i), t0)
				check(l)
			}
			// Much later every bucket is full again: the next sweep drops them all.
			later := t0.Add(time.Hour)
			for i := 0; i < maxClients; i++ {
				l.fail(netip.AddrFrom4([4]byte{172, 16, byte(i >> 8), byte(i)}), uint64(i), later)
				check(l)
			}
		})
	}
}

func TestRequestID(t *testing.T) {
	e := newTestEnv(t)
	for _, tc := range []struct {
		sent string
		keep bool
	}{{"abc-123_X.y", true}, {"", false}, {"has space", false}, {strings.Repeat("a", 65), false}} {
		req, _ := http.NewRequest("GET", e.url+"/healthz", nil)
		if tc.sent != "" {
			req.Header.Set(requestIDHeader, tc.sent)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		got := resp.Header.Get(requestIDHeader)
		if got == "" || (got == tc.sent) != tc.keep {
			t.Errorf("sent %q, got %q (keep=%v)", tc.sent, got, tc.keep)
		}
	}
}

func TestNewValidatesConfig(t *testing.T) {
	base := newTestEnv(t).srv
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no store", Config{Keys: base.keys}},
		{"no keys", Config{Store: base.store}},
		{"negative body", Config{Store: base.store, Keys: base.keys, MaxBodyBytes: -1}},
		{"negative timeout", Config{Store: base.store, Keys: base.keys, ShutdownTimeout: -time.Second}},
		{"unknown forwarded header", Config{Store: base.store, Keys: base.keys, ForwardedHeader: "X-Real-IP"}},
		{"invalid trusted proxy", Config{Store: base.store, Keys: base.keys, TrustedProxies: []netip.Prefix{{}}}},
	}
	for _, tc := range tests {
		if _, err := New(tc.cfg); err == nil {
			t.Errorf("%s: New succeeded", tc.name)
		}
	}
	s, err := New(Config{Store: base.store, Keys: base.keys})
	if err != nil {
		t.Fatalf("zero optional fields: %v", err)
	}
	if s.maxBodyBytes != 1<<20 || s.shutdownTimeout != 10*time.Second {
		t.Fatalf("defaults: %d %v", s.maxBodyBytes, s.shutdownTimeout)
	}
	// Registering twice on one registry must fail loudly, not half-work.
	if _, err := New(Config{Store: base.store, Keys: base.keys, Registerer: newTestEnv(t).reg}); err == nil {
		t.Fatal("duplicate metric registration accepted")
	}
}
