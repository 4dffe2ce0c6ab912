package api

import (
	"math"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Failed-authentication budget per client: a burst of authFailBurst bad keys,
// then one more per authFailRefill. A 256-bit key cannot be guessed anyway;
// the limit exists to make scanning pointless and keep logs quiet.
const (
	authFailBurst      = 10
	authFailRefill     = time.Second
	authFailMaxClients = 10_000
)

// failureLimiter tracks failed authentications per client address in a
// bounded table. Only failures create entries, so well-behaved clients cost
// nothing.
//
// Checking (blocked) and charging (fail) are separate steps around the key
// lookup, so a client firing N concurrent requests can overshoot its budget by
// at most N-1 — the bound is the connection concurrency, which is fine for a
// limiter whose job is to stop sustained guessing.
type failureLimiter struct {
	limit      rate.Limit
	burst      int
	maxClients int

	mu      sync.Mutex
	clients map[netip.Addr]*rate.Limiter
}

func newFailureLimiter(burst int, refill time.Duration, maxClients int) *failureLimiter {
	return &failureLimiter{
		limit:      rate.Every(refill),
		burst:      burst,
		maxClients: maxClients,
		clients:    make(map[netip.Addr]*rate.Limiter),
	}
}

// blocked reports whether client has no budget left and, if so, how long
// until it may try again (rounded up to whole seconds for Retry-After).
func (l *failureLimiter) blocked(client netip.Addr, now time.Time) (time.Duration, bool) {
	l.mu.Lock()
	lim := l.clients[client]
	l.mu.Unlock()
	if lim == nil {
		return 0, false
	}
	tokens := lim.TokensAt(now)
	if tokens >= 1 {
		return 0, false
	}
	wait := time.Duration((1 - tokens) / float64(l.limit) * float64(time.Second))
	secs := math.Ceil(wait.Seconds())
	if secs < 1 {
		secs = 1
	}
	return time.Duration(secs) * time.Second, true
}

// fail charges one failed authentication to client.
func (l *failureLimiter) fail(client netip.Addr, now time.Time) {
	l.mu.Lock()
	lim := l.clients[client]
	if lim == nil {
		if len(l.clients) >= l.maxClients {
			l.evictLocked(now)
		}
		lim = rate.NewLimiter(l.limit, l.burst)
		l.clients[client] = lim
	}
	l.mu.Unlock()
	lim.AllowN(now, 1)
}

// evictLocked makes room. Entries whose bucket has refilled carry no
// information and go first. If the table is still nearly full (many clients
// failing right now), arbitrary entries go too, down to 90% of the cap, so the
// O(n) sweep runs at most once per tenth-of-cap insertions instead of on every
// one. Forgetting an active client only resets its budget; an attacker able
// to rotate through that many addresses would defeat per-address limits
// anyway, whereas unbounded growth would hand them our memory.
func (l *failureLimiter) evictLocked(now time.Time) {
	for k, lim := range l.clients {
		if lim.TokensAt(now) >= float64(l.burst) {
			delete(l.clients, k)
		}
	}
	target := l.maxClients - l.maxClients/10
	for k := range l.clients {
		if len(l.clients) < target {
			break
		}
		delete(l.clients, k)
	}
}

func (l *failureLimiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.clients)
}

// clientKey is the rate-limiting identity of a request: the peer address
// from RemoteAddr (proxies' X-Forwarded-For is spoofable and ignored), with
// IPv6 peers grouped by /64 because one host usually owns a whole /64.
// Unparseable addresses (e.g. unix sockets) share the zero key.
func clientKey(remoteAddr string) netip.Addr {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	addr = addr.Unmap().WithZone("")
	if addr.Is6() {
		if p, err := addr.Prefix(64); err == nil {
			return p.Addr()
		}
	}
	return addr
}
