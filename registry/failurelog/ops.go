package failurelog

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/webhookd/webhookd/events"
	"github.com/webhookd/webhookd/registry"
)

// defaultListLimit is the list length when the caller asks for none, as
// registry.Store.Failures does.
const defaultListLimit = 100

// RecordFailure keeps f for every instance to see, replacing an older
// record of the same delivery on the same webhook (a delivery that fails
// again after a manual retry). It returns once the stream has stored the
// record; the dispatcher acks the job only then, so a nil error means
// the record is durable.
func (l *Log) RecordFailure(ctx context.Context, f registry.Failure) error {
	st, err := l.handle()
	if err != nil {
		return err
	}
	if !events.ValidToken(f.WebhookID) {
		return fmt.Errorf("failurelog: record failure %s: webhook id %q is not a subject token", f.ID, f.WebhookID)
	}
	if f.ID == "" {
		return fmt.Errorf("failurelog: record failure of webhook %s: the delivery id is empty", f.WebhookID)
	}
	// Remove the older record of this delivery first: published beside it,
	// the new one would count against MaxPerWebhook and could push out
	// another delivery's record. If publishing then fails, the dispatcher
	// records the failure again later, so nothing is lost for good.
	entries, err := l.scan(ctx, st, f.WebhookID)
	if err != nil {
		return err
	}
	if i := slices.IndexFunc(entries, func(e entry) bool { return e.f.ID == f.ID }); i >= 0 {
		for _, seq := range append(entries[i].older, entries[i].seq) {
			if err := st.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
				return l.wrap(err, "replace failure %s of webhook %s", f.ID, f.WebhookID)
			}
		}
	}
	keep := l.cfg.MaxBodyBytes == 0 || len(f.Body) <= l.cfg.MaxBodyBytes
	msg, err := encodeRecord(l.subject(f.WebhookID), f, keep)
	if err != nil {
		return fmt.Errorf("failurelog: %w", err)
	}
	// A record over the server's max_payload could never be written and
	// the dispatcher would retry it forever: keep it without its body.
	// (The margin is for the headers PublishMsg adds.)
	if limit := l.cfg.JetStream.Conn().MaxPayload(); keep && limit > 0 && int64(msg.Size())+256 > limit {
		keep = false
		if msg, err = encodeRecord(l.subject(f.WebhookID), f, false); err != nil {
			return fmt.Errorf("failurelog: %w", err)
		}
	}
	if !keep {
		l.log.Warn("failure recorded without its event body, which is too large; it cannot be retried",
			"webhook", f.WebhookID, "failure", f.ID, "body_bytes", len(f.Body))
	}
	if _, err := l.cfg.JetStream.PublishMsg(ctx, msg, jetstream.WithExpectStream(l.cfg.Stream)); err != nil {
		return l.wrap(err, "record failure %s of webhook %s", f.ID, f.WebhookID)
	}
	return nil
}

// Failures lists the webhook's failures, newest first, at most limit (zero
// or less: 100). The records carry no Body: lists do not show it, and
// leaving it on the server keeps a list of 100 records small; Failure
// returns it. The caller checks that the webhook belongs to the workspace.
func (l *Log) Failures(ctx context.Context, webhookID string, limit int) ([]registry.Failure, error) {
	st, err := l.handle()
	if err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = defaultListLimit
	}
	if !events.ValidToken(webhookID) {
		return nil, nil
	}
	entries, err := l.scan(ctx, st, webhookID)
	if err != nil {
		return nil, err
	}
	out := make([]registry.Failure, 0, min(limit, len(entries)))
	for i := len(entries) - 1; i >= 0 && len(out) < limit; i-- {
		out = append(out, entries[i].f)
	}
	return out, nil
}

// Failure returns one record of the webhook, with its Body, or an error
// wrapping registry.ErrNotFound.
func (l *Log) Failure(ctx context.Context, webhookID, failureID string) (registry.Failure, error) {
	st, err := l.handle()
	if err != nil {
		return registry.Failure{}, err
	}
	notFound := fmt.Errorf("failurelog: failure %s of webhook %s: %w", failureID, webhookID, registry.ErrNotFound)
	if !events.ValidToken(webhookID) {
		return registry.Failure{}, notFound
	}
	entries, err := l.scan(ctx, st, webhookID)
	if err != nil {
		return registry.Failure{}, err
	}
	i := slices.IndexFunc(entries, func(e entry) bool { return e.f.ID == failureID })
	if i < 0 {
		return registry.Failure{}, notFound
	}
	raw, err := st.GetMsg(ctx, entries[i].seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return registry.Failure{}, notFound // removed since the scan
	}
	if err != nil {
		return registry.Failure{}, l.wrap(err, "get failure %s of webhook %s", failureID, webhookID)
	}
	if raw.Subject != l.subject(webhookID) {
		return registry.Failure{}, notFound
	}
	f, err := decodeRecord(webhookID, raw.Header, raw.Data, true)
	if err != nil {
		l.skip(webhookID, raw.Sequence, err)
		return registry.Failure{}, notFound
	}
	return f, nil
}

// DeleteFailure removes a record of the webhook (after a manual retry),
// or returns an error wrapping registry.ErrNotFound.
func (l *Log) DeleteFailure(ctx context.Context, webhookID, failureID string) error {
	st, err := l.handle()
	if err != nil {
		return err
	}
	notFound := fmt.Errorf("failurelog: delete failure %s of webhook %s: %w", failureID, webhookID, registry.ErrNotFound)
	if !events.ValidToken(webhookID) {
		return notFound
	}
	entries, err := l.scan(ctx, st, webhookID)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(entries, func(e entry) bool { return e.f.ID == failureID })
	if i < 0 {
		return notFound
	}
	// Older copies of the id (left by an interrupted replace) go too, or
	// they would surface once the newest is gone.
	for _, seq := range entries[i].older {
		if err := st.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return l.wrap(err, "delete failure %s of webhook %s", failureID, webhookID)
		}
	}
	if err := st.DeleteMsg(ctx, entries[i].seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return l.wrap(err, "delete failure %s of webhook %s", failureID, webhookID)
	}
	return nil
}

// Forget removes every record of a deleted webhook.
func (l *Log) Forget(ctx context.Context, webhookID string) error {
	st, err := l.handle()
	if err != nil {
		return err
	}
	if !events.ValidToken(webhookID) {
		return nil
	}
	if err := st.Purge(ctx, jetstream.WithPurgeSubject(l.subject(webhookID))); err != nil {
		return l.wrap(err, "forget the failures of webhook %s", webhookID)
	}
	return nil
}

// entry is one record found by scan: the newest message of its id, and
// the sequences of older messages of the same id.
type entry struct {
	seq   uint64
	older []uint64
	f     registry.Failure
}

// scan reads the headers of every message on the webhook's subject and
// returns one entry per failure id, oldest first. It reads headers only,
// through an ephemeral consumer filtered on the one subject, so it moves
// at most MaxPerWebhook small messages whatever the stream holds.
func (l *Log) scan(ctx context.Context, st jetstream.Stream, webhookID string) ([]entry, error) {
	subject := l.subject(webhookID)
	cons, err := st.CreateConsumer(ctx, jetstream.ConsumerConfig{
		Description:   "webhookd failure log read",
		FilterSubject: subject,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckNonePolicy,
		HeadersOnly:   true,
		MemoryStorage: true,
		Replicas:      1,
		// Deleted below; the threshold only covers a crash in between.
		InactiveThreshold: 30 * time.Second,
	})
	if err != nil {
		return nil, l.wrap(err, "read the failures of webhook %s", webhookID)
	}
	info := cons.CachedInfo()
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := st.DeleteConsumer(dctx, info.Name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			l.log.Debug("could not delete a failure log reader; the server drops it when idle", "webhook", webhookID, "err", err)
		}
	}()
	pending := info.NumPending
	if pending == 0 {
		return nil, nil
	}
	// The stream's per-subject limit keeps pending at most MaxPerWebhook
	// (of whichever instance last set the stream up); the cap guards
	// against a stream configured by hand.
	n := int(min(pending, MaxPerWebhookLimit))
	if uint64(n) < pending {
		l.log.Warn("a webhook's failure subject holds more records than can be read; reading the oldest", "webhook", webhookID,
			"records", pending, "read", n)
	}
	// No-wait: the server sends what the subject holds and ends the
	// batch at once, instead of holding the request open for more.
	batch, err := cons.FetchNoWait(n)
	if err != nil {
		return nil, l.wrap(err, "read the failures of webhook %s", webhookID)
	}
	all := make([]entry, 0, n) // stream order
	for m := range batch.Messages() {
		md, err := m.Metadata()
		if err != nil {
			l.skip(webhookID, 0, err)
			continue
		}
		seq := md.Sequence.Stream
		if m.Subject() != subject {
			l.skip(webhookID, seq, fmt.Errorf("%w: subject %q", errMalformed, m.Subject()))
			continue
		}
		f, err := decodeRecord(webhookID, m.Headers(), nil, false)
		if err != nil {
			l.skip(webhookID, seq, err)
			continue
		}
		all = append(all, entry{seq: seq, f: f})
	}
	if err := batch.Error(); err != nil {
		return nil, l.wrap(err, "read the failures of webhook %s", webhookID)
	}
	// The newest copy of an id wins; older ones (an interrupted replace,
	// two instances recording one delivery) are remembered for deletion.
	out := make([]entry, 0, len(all))
	at := make(map[string]int, len(all))
	for i := len(all) - 1; i >= 0; i-- {
		e := all[i]
		if j, ok := at[e.f.ID]; ok {
			out[j].older = append(out[j].older, e.seq)
			continue
		}
		at[e.f.ID] = len(out)
		out = append(out, e)
	}
	slices.Reverse(out)
	return out, nil
}

// skip logs and counts a message that is not a readable record; it stays
// in the stream (it may be an operator's) until the limits remove it.
func (l *Log) skip(webhookID string, seq uint64, err error) {
	l.malformed.Inc()
	l.log.Warn("skipping an unreadable failure record", "webhook", webhookID, "seq", seq, "err", err)
}
