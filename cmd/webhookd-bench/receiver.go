package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/webhookd/webhookd/dispatcher/signature"
)

// behaviour is how a receiver answers.
type behaviour int

const (
	healthy behaviour = iota // 204 after verifying
	hanging                  // verifies, then never answers
	failing                  // verifies, then 500
	trap                     // must never be called: subscriptions no event matches point here
)

func (b behaviour) String() string {
	return [...]string{"healthy", "hanging", "failing", "trap"}[b]
}

// book is what the receivers of one scenario check deliveries against:
// subscription i is reached at path /s/<i>, and its secret is set once its
// registration returned.
type book struct {
	ledger  *ledger
	shape   eventShape
	secrets []atomic.Pointer[signature.Secret]
}

func newBook(l *ledger, shape eventShape) *book {
	return &book{ledger: l, shape: shape, secrets: make([]atomic.Pointer[signature.Secret], len(l.subs))}
}

func subPath(i int) string { return "/s/" + strconv.Itoa(i) }

// setSecret records subscription i's secret as registration returned it.
func (b *book) setSecret(i int, secret string) error {
	s, err := signature.ParseSecret(secret)
	if err != nil {
		return fmt.Errorf("subscription %d: %w", i, err)
	}
	b.secrets[i].Store(&s)
	return nil
}

// receiver is one webhook endpoint on its own loopback listener.
type receiver struct {
	mode behaviour
	book *book
	url  string
	srv  *http.Server
	stop chan struct{} // releases hanging handlers
	done chan struct{} // Serve returned

	attempts  atomic.Int64 // requests of any kind
	conns     atomic.Int64 // open connections
	peakConns atomic.Int64
}

// bodyPool recycles request body buffers: receivers must not be the
// bottleneck they are measuring.
var bodyPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func newReceiver(mode behaviour, b *book) (*receiver, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("receiver: listen: %w", err)
	}
	return serveReceiver(ln, mode, b, nil), nil
}

// serveReceiver serves on ln, which the receiver owns from now on. after,
// when set, runs once each request was answered: a dead host that came
// back uses it to time its deliveries.
func serveReceiver(ln net.Listener, mode behaviour, b *book, after func()) *receiver {
	if after == nil {
		return serveWrapped(ln, mode, b, nil)
	}
	return serveWrapped(ln, mode, b, func(r *receiver) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			r.ServeHTTP(w, req)
			after()
		})
	})
}

// serveWrapped is serveReceiver with the handler wrap(r) in front of the
// receiver's own (nil: none).
func serveWrapped(ln net.Listener, mode behaviour, b *book, wrap func(r *receiver) http.Handler) *receiver {
	r := &receiver{mode: mode, book: b, url: "http://" + ln.Addr().String(),
		stop: make(chan struct{}), done: make(chan struct{})}
	var h http.Handler = r
	if wrap != nil {
		h = wrap(r)
	}
	r.srv = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ConnState: r.connState}
	go func() {
		defer close(r.done)
		_ = r.srv.Serve(ln) // ErrServerClosed after close
	}()
	return r
}

func (r *receiver) connState(_ net.Conn, s http.ConnState) {
	switch s {
	case http.StateNew:
		n := r.conns.Add(1)
		for {
			p := r.peakConns.Load()
			if n <= p || r.peakConns.CompareAndSwap(p, n) {
				break
			}
		}
	case http.StateClosed, http.StateHijacked:
		r.conns.Add(-1)
	}
}

// close stops the server, releases hanging handlers, and waits for Serve.
func (r *receiver) close() {
	close(r.stop)
	_ = r.srv.Close()
	<-r.done
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	now := time.Now()
	r.attempts.Add(1)
	l := r.book.ledger
	if r.mode == trap {
		l.unexpected.Add(1)
		w.WriteHeader(http.StatusGone) // so the daemon stops retrying it
		return
	}
	buf := bodyPool.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= 1<<20 {
			buf.Reset()
			bodyPool.Put(buf)
		}
	}()
	buf.Reset()
	if _, err := buf.ReadFrom(io.LimitReader(req.Body, 1<<20)); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	code := r.check(req, buf.Bytes(), now)
	switch {
	case code != 0:
	case r.mode == hanging:
		select {
		case <-req.Context().Done():
		case <-r.stop:
			// Returning would answer 200; abort the connection instead.
			panic(http.ErrAbortHandler)
		}
		return
	case r.mode == failing:
		code = http.StatusInternalServerError
	default:
		code = http.StatusNoContent
	}
	w.WriteHeader(code)
}

// check verifies and books one delivery; non-zero is the error status to
// answer with.
func (r *receiver) check(req *http.Request, body []byte, now time.Time) int {
	b, l := r.book, r.book.ledger
	idx, err := strconv.Atoi(strings.TrimPrefix(req.URL.Path, "/s/"))
	if err != nil || !strings.HasPrefix(req.URL.Path, "/s/") || idx < 0 || idx >= len(b.secrets) || b.secrets[idx].Load() == nil {
		l.unexpected.Add(1)
		return http.StatusNotFound
	}
	id := req.Header.Get("webhook-id")
	ts, err := strconv.ParseInt(req.Header.Get("webhook-timestamp"), 10, 64)
	if err != nil || signature.Verify(*b.secrets[idx].Load(), id, ts, body, req.Header.Get("webhook-signature"), now, 0) != nil {
		l.badSignature.Add(1)
		return http.StatusUnauthorized
	}
	seq, sentAtNs, err := parseBenchFields(body)
	if err != nil {
		l.unexpected.Add(1)
		return http.StatusBadRequest
	}
	sentAt := time.Unix(0, sentAtNs)
	var want [1024]byte
	if !bytes.Equal(b.shape.appendBody(want[:0], seq, sentAt), body) {
		l.bodyMismatch.Add(1)
		return http.StatusBadRequest
	}
	if l.record(idx, seq, id, sentAt, now) == outRejected {
		return http.StatusConflict
	}
	return 0
}

var errNotBench = errors.New("not a bench event")

// parseBenchFields extracts benchSeq and sentAt from a bench event without
// a full JSON decode; the caller rebuilds the body from them and compares
// bytes, which catches anything this shortcut could misread.
func parseBenchFields(body []byte) (seq int, sentAt int64, err error) {
	num := func(key string) (int64, error) {
		i := bytes.Index(body, []byte(key))
		if i < 0 {
			return 0, fmt.Errorf("%w: no %s", errNotBench, key)
		}
		rest := body[i+len(key):]
		end := 0
		for end < len(rest) && end < 20 && rest[end] >= '0' && rest[end] <= '9' {
			end++
		}
		v, err := strconv.ParseInt(string(rest[:end]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%w: %s: %w", errNotBench, key, err)
		}
		return v, nil
	}
	s, err := num(`"benchSeq":`)
	if err != nil {
		return 0, 0, err
	}
	if s > 1<<40 {
		return 0, 0, fmt.Errorf("%w: benchSeq %d out of range", errNotBench, s)
	}
	t, err := num(`"sentAt":`)
	if err != nil {
		return 0, 0, err
	}
	return int(s), t, nil
}
