package api

import (
	"crypto/sha256"
	"encoding/binary"
	"math"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Failed-authentication budgets. Only failed attempts are charged and
// only failed attempts are ever refused: a valid key is served whatever
// anyone else (or the same client with another key) has failed before.
//
// Per (client address, presented key): a burst of authFailBurst, then one
// more per authFailRefill. The key is identified by the first 8 bytes of
// its SHA-256 — in memory only, never logged — so that one client looping
// on a stale key behind a load balancer exhausts its own budget, not that
// of the other tenants behind the same proxy.
//
// Per client address, for all keys together: a larger budget
// (authAddrBurst, then one per authAddrRefill). Without it a scanner that
// presents a new key each time would get a fresh budget with every guess.
// It only ever turns a wrong key's 401 into a 429.
//
// A 256-bit key cannot be guessed anyway; the limits exist to make
// scanning pointless, tell looping clients to back off and keep the logs
// quiet.
const (
	authFailBurst      = 10
	authFailRefill     = time.Second
	authAddrBurst      = 100
	authAddrRefill     = 50 * time.Millisecond
	authFailMaxClients = 10_000 // entries of each table
)

type budget struct {
	burst  int
	refill time.Duration
}

// keyedClient is the per-key table's key.
type keyedClient struct {
	addr netip.Addr
	key  uint64
}

// keyID is the presented key's identity in the limiter.
func keyID(key string) uint64 {
	h := sha256.Sum256([]byte(key))
	return binary.BigEndian.Uint64(h[:8])
}

// failureLimiter tracks failed authentications in two bounded tables. Only
// failures create entries, so well-behaved clients cost nothing. A check
// and its charge happen under one lock, so concurrent failures cannot
// overshoot a budget.
type failureLimiter struct {
	mu      sync.Mutex
	perKey  *bucketTable[keyedClient]
	perAddr *bucketTable[netip.Addr]
}

func newFailureLimiter(perKey, perAddr budget, maxClients int) *failureLimiter {
	return &failureLimiter{
		perKey:  newBucketTable[keyedClient](perKey, maxClients),
		perAddr: newBucketTable[netip.Addr](perAddr, maxClients),
	}
}

// fail records a failed authentication by addr with a key whose keyID is
// key. If either budget is spent, nothing is charged and fail reports how
// long until both allow another attempt (whole seconds, at least 1, for
// Retry-After); otherwise it charges both and reports false.
func (l *failureLimiter) fail(addr netip.Addr, key uint64, now time.Time) (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := keyedClient{addr, key}
	wait := max(l.perKey.wait(k, now), l.perAddr.wait(addr, now))
	if wait > 0 {
		return wait, true
	}
	l.perKey.charge(k, now)
	l.perAddr.charge(addr, now)
	return 0, false
}

func (l *failureLimiter) sizes() (perKey, perAddr int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.perKey.m), len(l.perAddr.m)
}

// bucketTable is a bounded map of token buckets; its owner locks it.
type bucketTable[K comparable] struct {
	limit rate.Limit
	burst int
	max   int
	m     map[K]*rate.Limiter
}

func newBucketTable[K comparable](b budget, maxEntries int) *bucketTable[K] {
	return &bucketTable[K]{limit: rate.Every(b.refill), burst: b.burst, max: maxEntries, m: make(map[K]*rate.Limiter)}
}

// wait is 0 while k has a token, else the time until it has one, rounded
// up to whole seconds.
func (t *bucketTable[K]) wait(k K, now time.Time) time.Duration {
	lim := t.m[k]
	if lim == nil {
		return 0
	}
	tokens := lim.TokensAt(now)
	if tokens >= 1 {
		return 0
	}
	secs := math.Ceil((1 - tokens) / float64(t.limit))
	return time.Duration(max(secs, 1)) * time.Second
}

func (t *bucketTable[K]) charge(k K, now time.Time) {
	lim := t.m[k]
	if lim == nil {
		if len(t.m) >= t.max {
			t.evict(now)
		}
		lim = rate.NewLimiter(t.limit, t.burst)
		t.m[k] = lim
	}
	lim.AllowN(now, 1)
}

// evict makes room. Entries whose bucket has refilled carry no information
// and go first. If the table is still nearly full (many clients failing
// right now), arbitrary entries go too, down to 90% of the cap, so the
// O(n) sweep runs at most once per tenth-of-cap insertions instead of on
// every one. Forgetting an active client only resets its budget; an
// attacker able to rotate through that many addresses or keys would defeat
// the per-entry limit anyway, whereas unbounded growth would hand them our
// memory.
func (t *bucketTable[K]) evict(now time.Time) {
	for k, lim := range t.m {
		if lim.TokensAt(now) >= float64(t.burst) {
			delete(t.m, k)
		}
	}
	target := t.max - t.max/10
	for k := range t.m {
		if len(t.m) < target {
			break
		}
		delete(t.m, k)
	}
}
