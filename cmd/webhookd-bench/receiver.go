package main

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/webhookd/webhookd/dispatcher/signature"
)

type behaviour int

const (
	healthy behaviour = iota
	hanging
	failing // answers 500
)

// subscription is one registered webhook as the receiver sees it.
type subscription struct {
	secret signature.Secret
	mu     sync.Mutex
	seen   []uint64 // bitset of event sequence numbers received
	unique int
	dups   int
}

// receiver is an HTTP endpoint that verifies, dedupes and times every
// delivery for the subscriptions pointing at it.
type receiver struct {
	mode    behaviour
	srv     *http.Server
	ln      net.Listener
	url     string
	events  int
	subs    sync.Map // path -> *subscription
	lat     histogram
	badSig  atomic.Int64
	strange atomic.Int64 // deliveries for unknown paths or sequences
	hits    atomic.Int64
	stop    chan struct{}
}

func newReceiver(mode behaviour, events int) (*receiver, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &receiver{mode: mode, ln: ln, url: "http://" + ln.Addr().String(), events: events, stop: make(chan struct{})}
	r.srv = &http.Server{Handler: r, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = r.srv.Serve(ln) }()
	return r, nil
}

func (r *receiver) close() {
	close(r.stop)
	_ = r.srv.Close()
}

func (r *receiver) add(path, secret string) error {
	s, err := signature.ParseSecret(secret)
	if err != nil {
		return err
	}
	r.subs.Store(path, &subscription{secret: s, seen: make([]uint64, r.events/64+1)})
	return nil
}

type benchBody struct {
	Seq   int   `json:"seq"`
	Sched int64 `json:"sched"`
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	now := time.Now()
	r.hits.Add(1)
	switch r.mode {
	case hanging:
		select {
		case <-req.Context().Done():
		case <-r.stop:
		}
		return
	case failing:
		_, _ = io.Copy(io.Discard, req.Body)
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	v, ok := r.subs.Load(req.URL.Path)
	if !ok {
		r.strange.Add(1)
		w.WriteHeader(http.StatusNotFound)
		return
	}
	sub := v.(*subscription)
	ts, _ := strconv.ParseInt(req.Header.Get("webhook-timestamp"), 10, 64)
	if signature.Verify(sub.secret, req.Header.Get("webhook-id"), ts, body, req.Header.Get("webhook-signature"), now, 5*time.Minute) != nil {
		r.badSig.Add(1)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var b benchBody
	if json.Unmarshal(body, &b) != nil || b.Seq < 0 || b.Seq >= r.events {
		r.strange.Add(1)
		w.WriteHeader(http.StatusOK)
		return
	}
	sub.mu.Lock()
	word, bit := b.Seq/64, uint64(1)<<(b.Seq%64)
	dup := sub.seen[word]&bit != 0
	sub.seen[word] |= bit
	if dup {
		sub.dups++
	} else {
		sub.unique++
	}
	sub.mu.Unlock()
	if !dup {
		r.lat.record(now.Sub(time.Unix(0, b.Sched)))
	}
	w.WriteHeader(http.StatusNoContent)
}

// totals sums the receiver's subscriptions.
func (r *receiver) totals() (unique, dups int) {
	r.subs.Range(func(_, v any) bool {
		s := v.(*subscription)
		s.mu.Lock()
		unique += s.unique
		dups += s.dups
		s.mu.Unlock()
		return true
	})
	return
}
