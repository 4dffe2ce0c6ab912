package deliverylog

import (
	"context"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/webhookd/webhookd/events"
)

// State is a delivery's state.
type State string

const (
	// Pending: matched, not attempted yet (queued, or held while its
	// webhook's circuit is open). No attempt record says it; a look-up of
	// the event shows it for the matches that have none.
	Pending State = "pending"
	// Retrying: attempted and failed, another attempt is scheduled.
	Retrying State = "retrying"
	// Succeeded: an attempt got a 2xx.
	Succeeded State = "succeeded"
	// Failed: no more attempts (out of retries, 410 Gone, too large...).
	Failed State = "failed"
)

// ParseState parses a state as written in a query ("" is no state).
func ParseState(s string) (State, bool) {
	switch st := State(s); st {
	case "", Pending, Retrying, Succeeded, Failed:
		return st, true
	}
	return "", false
}

// MaxResponseBytes bounds the response snippet an attempt keeps.
const MaxResponseBytes = 1024

// maxErrorBytes bounds an attempt's error text.
const maxErrorBytes = 256

// Attempt is one delivery attempt and the delivery's state after it.
type Attempt struct {
	DeliveryID string `json:"deliveryId"`
	WebhookID  string `json:"webhookId"`
	Workspace  string `json:"workspace"`
	EventID    string `json:"eventId"`
	EventType  string `json:"eventType"`
	// Published is when the event entered the events stream.
	Published time.Time `json:"publishedAt"`
	// Attempt counts from 1; 0 records a delivery given up before any
	// attempt (too large, say).
	Attempt int       `json:"attempt"`
	At      time.Time `json:"at"`
	// Duration is the attempt's wall time, request to response headers
	// (or the error).
	Duration time.Duration `json:"durationNs"`
	// Status is the HTTP status, 0 when there was no response.
	Status int `json:"status,omitempty"`
	// ErrorClass is the failure's class: "timeout", "network",
	// "blocked", "3xx", "4xx", "5xx"; empty on success.
	ErrorClass string `json:"errorClass,omitempty"`
	// Error is the failure in words, without the URL.
	Error string `json:"error,omitempty"`
	// Response is the start of the response body, when it is text.
	Response string `json:"response,omitempty"`
	// State is the delivery's state after this attempt.
	State State `json:"state"`
	// NextAttemptAt is when the next attempt is due (State Retrying).
	NextAttemptAt time.Time `json:"nextAttemptAt,omitzero"`
	// Reason says why a Failed delivery stopped (the retry policy's
	// reasons, "gone", "too_large", ...).
	Reason string `json:"reason,omitempty"`
	// Trigger says what started this run of attempts when it was not the
	// event itself: "retry" (a manual retry) or "replay:<id>".
	Trigger string `json:"trigger,omitempty"`
}

// Snippet returns the start of a response body as the log keeps it: at
// most MaxResponseBytes, cut at a character boundary, and empty unless
// it is text (valid UTF-8 without NUL bytes) — a binary answer says
// nothing useful and could be anything.
func Snippet(body []byte) string {
	if len(body) > MaxResponseBytes {
		body = body[:MaxResponseBytes]
		for i := 0; i < utf8.UTFMax && len(body) > 0 && !utf8.Valid(body); i++ {
			body = body[:len(body)-1]
		}
	}
	if !utf8.Valid(body) {
		return ""
	}
	for _, c := range body {
		if c == 0 {
			return ""
		}
	}
	return string(body)
}

// Record logs a for every instance to see. It never blocks on the
// server: the attempt joins its webhook's batch, published within
// FlushInterval (at once when the batch is full) asynchronously. It is
// dropped (counted, and logged at most once a minute) when the stream is
// not set up or MaxPending messages already await acknowledgement.
func (l *Log) Record(a Attempt) {
	if _, err := l.handle(); err != nil {
		l.dropped(1, "stream not ready", err)
		return
	}
	if !events.ValidToken(a.Workspace) || !events.ValidToken(a.WebhookID) {
		l.dropped(1, "invalid ids", fmt.Errorf("workspace %q, webhook %q are not subject tokens", a.Workspace, a.WebhookID))
		return
	}
	if len(a.Error) > maxErrorBytes {
		a.Error = a.Error[:maxErrorBytes]
	}
	if len(a.Response) > MaxResponseBytes {
		a.Response = Snippet([]byte(a.Response))
	}
	subj := l.subject(a.Workspace, a.WebhookID)
	l.mu.Lock()
	b := appendAttempt(l.batches[subj], &a)
	b = append(b, '\n')
	n := l.counts[subj] + 1
	if n >= l.cfg.MaxBatch {
		delete(l.batches, subj)
		delete(l.counts, subj)
	} else {
		l.batches[subj], l.counts[subj] = b, n
	}
	l.mu.Unlock()
	if n >= l.cfg.MaxBatch {
		l.publish(subj, b, n)
	}
}

// publishAll publishes every pending batch.
func (l *Log) publishAll() {
	l.mu.Lock()
	batches, counts := l.batches, l.counts
	if len(batches) == 0 {
		l.mu.Unlock()
		return
	}
	l.batches, l.counts = make(map[string][]byte, len(batches)), make(map[string]int, len(counts))
	l.mu.Unlock()
	for subj, b := range batches {
		l.publish(subj, b, counts[subj])
	}
}

func (l *Log) publish(subj string, data []byte, n int) {
	if _, err := l.pub.PublishMsgAsync(&nats.Msg{Subject: subj, Data: data}, jetstream.WithStallWait(time.Millisecond)); err != nil {
		l.dropped(n, "backlog", err)
		return
	}
	l.metrics.records.Add(float64(n))
}

// dropped counts n attempts not logged, and logs why at most once a minute.
func (l *Log) dropped(n int, why string, err error) {
	l.metrics.dropped.Add(float64(n))
	now := time.Now()
	l.mu.Lock()
	warn := now.Sub(l.warned) >= time.Minute
	if warn {
		l.warned = now
	}
	l.mu.Unlock()
	if warn {
		l.log.Warn("delivery attempt not logged (counted in webhookd_delivery_log_dropped_total; logged once a minute)",
			"why", why, "err", err)
	}
}

// Flush publishes the pending batches and waits until every record so
// far is acknowledged, or ctx ends: for shutdown, and for readers that
// must see their own writes.
func (l *Log) Flush(ctx context.Context) error {
	l.publishAll()
	select {
	case <-l.pub.PublishAsyncComplete():
		return nil
	case <-ctx.Done():
		return fmt.Errorf("deliverylog: flush: %w", ctx.Err())
	}
}

type metrics struct {
	records, dropped prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (metrics, error) {
	m := metrics{
		records: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "webhookd", Subsystem: "delivery_log", Name: "records_total",
			Help: "Delivery attempts published to the shared delivery log.",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "webhookd", Subsystem: "delivery_log", Name: "dropped_total",
			Help: "Delivery attempts not logged: the log stream was not ready, behind by Config.MaxPending records, or refused them.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []*prometheus.Counter{&m.records, &m.dropped} {
		if err := reg.Register(*c); err != nil {
			// A second Log in one process (tests) shares the counters.
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return m, fmt.Errorf("deliverylog: register metrics: %w", err)
			}
			existing, ok := are.ExistingCollector.(prometheus.Counter)
			if !ok {
				return m, fmt.Errorf("deliverylog: register metrics: %w", err)
			}
			*c = existing
		}
	}
	return m, nil
}
