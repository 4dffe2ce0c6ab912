package deliverylog

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/webhookd/webhookd/events"
	"github.com/webhookd/webhookd/registry"
)

// Delivery is one (event, webhook) delivery: its attempts folded.
type Delivery struct {
	ID        string    `json:"id"`
	WebhookID string    `json:"webhookId"`
	EventID   string    `json:"eventId"`
	EventType string    `json:"eventType"`
	Published time.Time `json:"publishedAt"`
	// State is the newest attempt's.
	State         State     `json:"state"`
	Reason        string    `json:"reason,omitempty"`
	NextAttemptAt time.Time `json:"nextAttemptAt,omitzero"`
	// FirstAttemptAt and LastAttemptAt span the attempts kept.
	FirstAttemptAt time.Time `json:"firstAttemptAt"`
	LastAttemptAt  time.Time `json:"lastAttemptAt"`
	// Attempts, oldest first. The oldest may have been discarded by the
	// log's bounds; Attempt numbers tell.
	Attempts []Attempt `json:"attempts"`

	seq uint64 // position of its first attempt kept (stream sequence << 16 | line): list order
}

// Query selects a webhook's deliveries.
type Query struct {
	// State keeps only deliveries in that state; zero keeps all.
	State State
	// Since keeps only deliveries with an attempt at or after it.
	Since time.Time
	// Limit is the page size; zero or less means 50.
	Limit int
	// Cursor continues a previous page (Page.NextCursor).
	Cursor string
}

// Page is one page of deliveries, newest first.
type Page struct {
	Deliveries []Delivery
	// NextCursor continues the list; empty on the last page.
	NextCursor string
}

// ErrBadCursor: a cursor not made by Deliveries.
var ErrBadCursor = errors.New("deliverylog: malformed cursor")

// Deliveries lists a webhook's deliveries, newest (by first attempt kept)
// first. The caller checks that the webhook belongs to the workspace.
func (l *Log) Deliveries(ctx context.Context, workspace, webhookID string, q Query) (Page, error) {
	if q.Limit <= 0 {
		q.Limit = 50
	}
	var before uint64
	if q.Cursor != "" {
		n, err := strconv.ParseUint(q.Cursor, 36, 64)
		if err != nil || n == 0 {
			return Page{}, ErrBadCursor
		}
		before = n
	}
	ds, err := l.webhook(ctx, workspace, webhookID)
	if err != nil {
		return Page{}, err
	}
	var p Page
	for _, d := range ds { // newest first
		if before != 0 && d.seq >= before {
			continue
		}
		if d.LastAttemptAt.Before(q.Since) {
			continue
		}
		if q.State != "" && d.State != q.State {
			continue
		}
		if len(p.Deliveries) == q.Limit {
			p.NextCursor = strconv.FormatUint(p.Deliveries[len(p.Deliveries)-1].seq, 36)
			break
		}
		p.Deliveries = append(p.Deliveries, d)
	}
	return p, nil
}

// Delivery returns one delivery of a webhook, or an error wrapping
// registry.ErrNotFound when the log holds no attempt of it.
func (l *Log) Delivery(ctx context.Context, workspace, webhookID, deliveryID string) (Delivery, error) {
	ds, err := l.webhook(ctx, workspace, webhookID)
	if err != nil {
		return Delivery{}, err
	}
	for _, d := range ds {
		if d.ID == deliveryID {
			return d, nil
		}
	}
	return Delivery{}, fmt.Errorf("delivery %s of webhook %s: %w", deliveryID, webhookID, registry.ErrNotFound)
}

// FailedEventIDs is the set of events whose delivery to the webhook is
// failed now (its newest attempt left it failed): what a replay of
// failed deliveries re-delivers (replay.FailedSource).
func (l *Log) FailedEventIDs(ctx context.Context, workspace, webhookID string) (map[string]bool, error) {
	ds, err := l.webhook(ctx, workspace, webhookID)
	if err != nil {
		return nil, err
	}
	failed := make(map[string]bool)
	for _, d := range ds {
		if d.State == Failed {
			failed[d.EventID] = true
		}
	}
	return failed, nil
}

// EventDeliveries returns the deliveries of one event to the workspace's
// webhooks that the log holds. It reads the workspace's attempts from
// since (the event's publication, when the caller knows it); with more
// than MaxScan of them, only the newest MaxScan or so are read.
func (l *Log) EventDeliveries(ctx context.Context, workspace, eventID string, since time.Time) ([]Delivery, error) {
	if !events.ValidToken(workspace) {
		return nil, fmt.Errorf("deliverylog: workspace %q is not a subject token", workspace)
	}
	as, err := l.read(ctx, l.root+workspace+".*", since, l.cfg.MaxScan, func(a *Attempt) bool { return a.EventID == eventID })
	if err != nil {
		return nil, err
	}
	return fold(as), nil
}

// webhook reads and folds one webhook's attempts, newest delivery first.
// It reads them all (MaxPerWebhook at most), so that every delivery it
// returns has every attempt the log keeps.
func (l *Log) webhook(ctx context.Context, workspace, webhookID string) ([]Delivery, error) {
	if !events.ValidToken(workspace) || !events.ValidToken(webhookID) {
		return nil, fmt.Errorf("deliverylog: workspace %q, webhook %q: %w", workspace, webhookID, registry.ErrNotFound)
	}
	// The per-subject limit bounds this read; the cap guards against a
	// stream configured by hand.
	as, err := l.read(ctx, l.subject(workspace, webhookID), time.Time{}, MaxPerWebhookLimit, nil)
	if err != nil {
		return nil, err
	}
	if len(as) > l.cfg.MaxPerWebhook { // batches hold more than they show
		as = as[len(as)-l.cfg.MaxPerWebhook:]
	}
	return fold(as), nil
}

type seqAttempt struct {
	seq uint64
	a   Attempt
}

// fold groups attempts (in stream order) by delivery, newest first.
func fold(as []seqAttempt) []Delivery {
	byID := make(map[string]int)
	var ds []Delivery
	for _, sa := range as {
		a := sa.a
		i, ok := byID[a.DeliveryID]
		if !ok {
			i = len(ds)
			byID[a.DeliveryID] = i
			ds = append(ds, Delivery{ID: a.DeliveryID, WebhookID: a.WebhookID, EventID: a.EventID,
				EventType: a.EventType, Published: a.Published, FirstAttemptAt: a.At, seq: sa.seq})
		}
		d := &ds[i]
		d.Attempts = append(d.Attempts, a)
		d.State, d.Reason, d.NextAttemptAt, d.LastAttemptAt = a.State, a.Reason, a.NextAttemptAt, a.At
	}
	slices.SortFunc(ds, func(a, b Delivery) int { return cmp.Compare(b.seq, a.seq) })
	return ds
}

// read returns the attempts on filter from since (zero: all), oldest
// first, at most max of them: when more match, it starts later, halving
// the window back from now until at most max remain. keep, when set,
// selects attempts as they are read.
func (l *Log) read(ctx context.Context, filter string, since time.Time, max int, keep func(*Attempt) bool) ([]seqAttempt, error) {
	st, err := l.handle()
	if err != nil {
		return nil, err
	}
	window := time.Duration(0)
	for {
		cons, pending, err := l.reader(ctx, st, filter, since)
		if err != nil {
			return nil, err
		}
		if pending <= uint64(max) || since.After(time.Now().Add(-time.Second)) {
			defer l.drop(ctx, st, cons)
			return l.fetch(cons, filter, min(pending, uint64(max)), keep)
		}
		l.drop(ctx, st, cons)
		if window == 0 {
			window = l.cfg.MaxAge
			if !since.IsZero() {
				window = time.Since(since)
			}
		}
		window /= 2
		since = time.Now().Add(-window)
	}
}

func (l *Log) reader(ctx context.Context, st jetstream.Stream, filter string, since time.Time) (jetstream.Consumer, uint64, error) {
	cfg := jetstream.ConsumerConfig{
		Description:   "webhookd delivery log read",
		FilterSubject: filter,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckNonePolicy,
		MemoryStorage: true,
		Replicas:      1,
		// Deleted after the read; the threshold only covers a crash.
		InactiveThreshold: 30 * time.Second,
	}
	if !since.IsZero() {
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	cons, err := st.CreateConsumer(ctx, cfg)
	if err != nil {
		return nil, 0, fmt.Errorf("deliverylog: read %s: %w (%w)", filter, err, registry.ErrUnavailable)
	}
	return cons, cons.CachedInfo().NumPending, nil
}

func (l *Log) drop(ctx context.Context, st jetstream.Stream, cons jetstream.Consumer) {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := st.DeleteConsumer(dctx, cons.CachedInfo().Name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		l.log.Debug("could not delete a delivery log reader; the server drops it when idle", "err", err)
	}
}

// fetch reads n messages from cons in batches.
func (l *Log) fetch(cons jetstream.Consumer, filter string, n uint64, keep func(*Attempt) bool) ([]seqAttempt, error) {
	var out []seqAttempt
	for read := uint64(0); read < n; {
		batch, err := cons.FetchNoWait(int(min(n-read, 1000)))
		if err != nil {
			return nil, fmt.Errorf("deliverylog: read %s: %w (%w)", filter, err, registry.ErrUnavailable)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				continue
			}
			idx := uint64(0)
			for line := range bytes.Lines(m.Data()) {
				idx++
				var a Attempt
				if err := json.Unmarshal(line, &a); err != nil || a.DeliveryID == "" {
					l.log.Warn("skipping an unreadable delivery log record", "subject", m.Subject(), "seq", md.Sequence.Stream)
					continue
				}
				if keep == nil || keep(&a) {
					// The position orders attempts within a batch too.
					out = append(out, seqAttempt{seq: md.Sequence.Stream<<16 | idx, a: a})
				}
			}
		}
		if err := batch.Error(); err != nil {
			return nil, fmt.Errorf("deliverylog: read %s: %w (%w)", filter, err, registry.ErrUnavailable)
		}
		if got == 0 {
			break // trimmed meanwhile
		}
		read += uint64(got)
	}
	return out, nil
}
