package api

import (
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestRepeatedBadKeysAreRateLimited(t *testing.T) {
	e := newTestEnv(t)
	// The budget refills one token a second; a request takes milliseconds, so
	// 3*burst attempts reach the limit on any machine short of a stalled one.
	limitedAt := 0
	for i := 1; i <= 3*authFailBurst; i++ {
		r := e.do("GET", "/api/webhook", "wrong-"+strconv.Itoa(i), "", nil)
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
	// While limited, even the right key is refused before it is checked.
	wantError(t, e.do("GET", "/api/webhook", keyAcme, "", nil), http.StatusTooManyRequests, codeRateLimited)
	// Unauthenticated operational endpoints are unaffected.
	if r := e.do("GET", "/healthz", "", "", nil); r.status != http.StatusOK {
		t.Fatalf("healthz while limited: %d", r.status)
	}

	m := e.do("GET", "/metrics", "", "", nil)
	if !strings.Contains(string(m.raw), "\nwebhookd_api_auth_failures_total "+strconv.Itoa(limitedAt-1)+"\n") {
		t.Fatalf("auth failure counter not %d:\n%s", limitedAt-1, m.raw)
	}
}

func TestFailureLimiter(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	a := netip.MustParseAddr("192.0.2.1")
	b := netip.MustParseAddr("192.0.2.2")
	l := newFailureLimiter(3, time.Second, 100)

	for i := 0; i < 3; i++ {
		if _, lim := l.blocked(a, t0); lim {
			t.Fatalf("blocked after %d failures", i)
		}
		l.fail(a, t0)
	}
	wait, lim := l.blocked(a, t0)
	if !lim || wait != time.Second {
		t.Fatalf("after burst: blocked=%v wait=%v, want true 1s", lim, wait)
	}
	if _, lim := l.blocked(b, t0); lim {
		t.Fatal("another client is blocked too")
	}
	if _, lim := l.blocked(a, t0.Add(1100*time.Millisecond)); lim {
		t.Fatal("still blocked after the refill interval")
	}
	if wait, _ := l.blocked(a, t0.Add(300*time.Millisecond)); wait != time.Second {
		t.Fatalf("partial refill wait = %v, want rounded up to 1s", wait)
	}
}

func TestFailureLimiterIsBounded(t *testing.T) {
	const maxClients = 1000
	t0 := time.Unix(1_700_000_000, 0)
	l := newFailureLimiter(10, time.Second, maxClients)
	// All failing at once: nothing refills, so eviction must fall back to
	// dropping live entries rather than growing.
	for i := 0; i < 20*maxClients; i++ {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		l.fail(ip, t0)
		if n := l.size(); n > maxClients {
			t.Fatalf("table grew to %d > %d", n, maxClients)
		}
	}
	// Much later every bucket is full again: the next sweep drops them all.
	later := t0.Add(time.Hour)
	for i := 0; i < maxClients; i++ {
		l.fail(netip.AddrFrom4([4]byte{172, 16, byte(i >> 8), byte(i)}), later)
	}
	if n := l.size(); n > maxClients {
		t.Fatalf("table grew to %d", n)
	}
}

func TestClientKey(t *testing.T) {
	tests := []struct{ remote, want string }{
		{"192.0.2.7:5555", "192.0.2.7"},
		{"[::ffff:192.0.2.7]:5555", "192.0.2.7"},
		{"[2001:db8:1:2:aaaa:bbbb:cccc:dddd]:443", "2001:db8:1:2::"},
		{"[2001:db8:1:2::1]:443", "2001:db8:1:2::"},
		{"[fe80::1%eth0]:80", "fe80::"},
		{"192.0.2.9", "192.0.2.9"},
		{"@", "invalid IP"},
		{"", "invalid IP"},
	}
	for _, tc := range tests {
		if got := clientKey(tc.remote).String(); got != tc.want {
			t.Errorf("clientKey(%q) = %s, want %s", tc.remote, got, tc.want)
		}
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
