package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// deadHost is a destination that is down in the way that hurts most: it
// accepts TCP connections and never answers, so every attempt holds a
// connection until the daemon's own timeout. It speaks no HTTP at all
// while dead (nothing is read beyond draining the socket), which makes its
// connection count exact: a connection is open from accept until the peer
// closes it.
//
// revive brings it back on the same port: the hung connections are closed
// (the daemon's attempts on them fail and must reconnect) and every new
// connection is served by an ordinary healthy receiver, which verifies and
// books each delivery in the scenario's ledger.
type deadHost struct {
	ln  net.Listener
	url string

	mu      sync.Mutex
	hung    map[net.Conn]struct{}
	revived bool
	backTo  *connListener // fed with new connections once revived
	rc      *receiver     // serves backTo

	readers sync.WaitGroup // one per hung connection
	done    chan struct{}  // the accept loop returned

	open     atomic.Int64 // hung connections not yet closed
	peak     atomic.Int64 // most open at once
	accepted atomic.Int64 // connections accepted while dead

	// Unix nanos, 0 = not yet.
	first    atomic.Int64 // first delivery booked after revival
	complete atomic.Int64 // the want-th distinct delivery booked

	// A turning host (newTurningHost) is healthy until turn: pre serves
	// its connections and books each delivery. Once turned, new
	// connections are hung like a dead host's, and requests on the
	// connections pre already holds get no answer either (nor booking).
	// open, accepted and peak count from the turn on; openConns adds
	// pre's connections.
	pre      *receiver
	preLn    *connListener
	turned   atomic.Bool
	preClose sync.Once
}

func newDeadHost() (*deadHost, error) { return newBadHost(nil) }

// newTurningHost is a host that answers like a healthy receiver of b
// until turn.
func newTurningHost(b *book) (*deadHost, error) { return newBadHost(b) }

func newBadHost(healthyFirst *book) (*deadHost, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("dead host: listen: %w", err)
	}
	h := &deadHost{ln: ln, url: "http://" + ln.Addr().String(), hung: map[net.Conn]struct{}{},
		done: make(chan struct{})}
	if healthyFirst != nil {
		h.preLn = newConnListener(ln.Addr())
		h.pre = serveWrapped(h.preLn, healthy, healthyFirst, func(r *receiver) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
				if h.turned.Load() {
					hangUnbooked(req, r.stop)
				}
				r.ServeHTTP(w, req)
			})
		})
	}
	go h.acceptLoop()
	return h, nil
}

// hangUnbooked reads the request and never answers it: it returns (by
// aborting the connection) once the client gives up or stop is closed.
func hangUnbooked(req *http.Request, stop <-chan struct{}) {
	_, _ = io.Copy(io.Discard, req.Body)
	select {
	case <-req.Context().Done():
	case <-stop:
	}
	panic(http.ErrAbortHandler)
}

// turn makes a turning host hang from now on (no-op for a dead one).
func (h *deadHost) turn() {
	if h.pre == nil {
		return
	}
	h.mu.Lock()
	h.turned.Store(true)
	raiseTo(&h.peak, h.preOpen())
	h.mu.Unlock()
}

// preOpen is the connections the healthy phase still holds.
func (h *deadHost) preOpen() int64 {
	if h.pre == nil {
		return 0
	}
	return h.pre.conns.Load()
}

// openConns is every connection open to the host while it is bad: the
// hung ones and, for a turning host, those of its healthy phase.
func (h *deadHost) openConns() int64 { return h.open.Load() + h.preOpen() }

func (h *deadHost) closePre() {
	if h.pre != nil {
		h.preClose.Do(h.pre.close) // closes preLn too
	}
}

func (h *deadHost) acceptLoop() {
	defer close(h.done)
	for {
		c, err := h.ln.Accept()
		if err != nil {
			return // closed
		}
		h.mu.Lock()
		if h.revived {
			back := h.backTo
			h.mu.Unlock()
			back.deliver(c)
			continue
		}
		if h.pre != nil && !h.turned.Load() {
			h.mu.Unlock()
			h.preLn.deliver(c)
			continue
		}
		// Registered under mu, so revive either sees this connection or
		// the accept after it sees revived.
		h.hung[c] = struct{}{}
		h.readers.Add(1)
		h.accepted.Add(1)
		raiseTo(&h.peak, h.open.Add(1)+h.preOpen())
		h.mu.Unlock()
		go h.hang(c)
	}
}

// hang drains c without ever answering, until the peer closes it (the
// daemon's timeout) or revive does.
func (h *deadHost) hang(c net.Conn) {
	defer h.readers.Done()
	// Small buffer: a run holds thousands of these at once.
	var buf [512]byte
	for {
		if _, err := c.Read(buf[:]); err != nil {
			break
		}
	}
	_ = c.Close()
	h.mu.Lock()
	delete(h.hung, c)
	h.mu.Unlock()
	h.open.Add(-1)
}

// revive closes every hung connection and answers from now on like a
// healthy receiver of subscription idx; once it has booked want distinct
// deliveries it is complete. It returns after the hung connections are
// gone, so open is 0 then.
func (h *deadHost) revive(b *book, idx int, want int64) {
	h.mu.Lock()
	if h.revived {
		h.mu.Unlock()
		return
	}
	h.revived = true
	h.backTo = newConnListener(h.ln.Addr())
	h.rc = serveReceiver(h.backTo, healthy, b, func() { h.booked(b.ledger, idx, want) })
	hung := make([]net.Conn, 0, len(h.hung))
	for c := range h.hung {
		hung = append(hung, c)
	}
	h.mu.Unlock()
	for _, c := range hung {
		_ = c.Close()
	}
	h.closePre()
	h.readers.Wait()
}

// booked notes the first and the completing delivery, from the ledger's
// count of distinct webhook-ids for idx (a retry does not count twice).
func (h *deadHost) booked(l *ledger, idx int, want int64) {
	u, _ := l.subCounts(idx)
	now := time.Now().UnixNano()
	if u > 0 {
		h.first.CompareAndSwap(0, now)
	}
	if u >= want {
		h.complete.CompareAndSwap(0, now)
	}
}

// close stops accepting, hangs up on everything and stops the receiver.
func (h *deadHost) close() {
	_ = h.ln.Close()
	<-h.done
	h.mu.Lock()
	for c := range h.hung {
		_ = c.Close()
	}
	rc := h.rc
	h.mu.Unlock()
	h.closePre()
	h.readers.Wait()
	if rc != nil {
		rc.close() // closes backTo too
	}
}

// connListener is a net.Listener fed by hand: the dead host's accept loop
// passes it the connections that arrive after revival, so the same port
// serves HTTP without being closed and reopened (which would race with
// the daemon's reconnects).
type connListener struct {
	addr   net.Addr
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newConnListener(addr net.Addr) *connListener {
	return &connListener{addr: addr, conns: make(chan net.Conn), closed: make(chan struct{})}
}

// deliver hands c to Accept, or closes it if the listener is closed.
func (l *connListener) deliver(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.closed:
		_ = c.Close()
	}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *connListener) Addr() net.Addr { return l.addr }

// raiseTo lifts a to n if n is larger.
func raiseTo(a *atomic.Int64, n int64) {
	for p := a.Load(); n > p && !a.CompareAndSwap(p, n); p = a.Load() {
	}
}
