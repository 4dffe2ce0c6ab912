package replay

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"

	"github.com/webhookd/webhookd/events"
	"github.com/webhookd/webhookd/registry"
)

// errLost: a progress write found the record changed by someone else (a
// takeover or a cancel). Their write wins; this runner stops silently.
var errLost = errors.New("replay: job taken over or canceled")

// errEnd ends a job as failed with its message as Job.Error.
type errEnd struct{ msg string }

func (e errEnd) Error() string { return e.msg }

func end(format string, args ...any) error { return errEnd{fmt.Sprintf(format, args...)} }

// Retry bounds for transient failures (the events stream, the failed
// set, the Enqueuer): long enough to ride out a NATS leader election,
// short enough that a broken dependency fails the job visibly.
const (
	retries      = 8
	firstBackoff = 100 * time.Millisecond
	mostBackoff  = 5 * time.Second
)

// runner runs one claimed job; it is used by one goroutine.
type runner struct {
	m        *Manager
	kv       jetstream.KeyValue
	rec      record
	rev      uint64
	lastBeat time.Time
	lim      *rate.Limiter
	failed   map[string]bool // nil unless status is "failed"
}

func (m *Manager) runJob(ctx context.Context, kv jetstream.KeyValue, rec record, rev uint64) {
	r := &runner{m: m, kv: kv, rec: rec, rev: rev, lastBeat: time.Now(),
		lim: rate.NewLimiter(rate.Limit(m.cfg.Rate), 1)}
	err := r.run(ctx)
	var e errEnd
	switch {
	case errors.Is(err, errLost):
		m.log.Info("replay job stopped: taken over or canceled elsewhere", "job", rec.ID)
	case ctx.Err() != nil:
		r.handBack()
	case err == nil:
		r.finish(ctx, StateSucceeded, "")
	case errors.As(err, &e):
		r.finish(ctx, StateFailed, e.msg)
	default:
		r.finish(ctx, StateFailed, err.Error())
	}
}

func (r *runner) run(ctx context.Context) error {
	if _, err := r.webhook(); err != nil {
		return err
	}
	if r.rec.Status == StatusFailed {
		err := r.retry(ctx, "list failed deliveries", func() error {
			set, err := r.m.cfg.Failed.FailedEventIDs(ctx, r.rec.Workspace, r.rec.WebhookID)
			r.failed = set
			return err
		})
		if err != nil {
			return err
		}
		if r.failed == nil {
			r.failed = map[string]bool{}
		}
	}
	// A pass ends the job, or fails on a transient error (consumer reset,
	// lost connection) and the next resumes after Cursor.
	wait := firstBackoff
	for attempt := 1; ; attempt++ {
		err := r.pass(ctx)
		var e errEnd
		if err == nil || errors.Is(err, errLost) || errors.As(err, &e) || ctx.Err() != nil || attempt == retries {
			return err
		}
		r.m.log.Warn("replay pass failed; resuming", "job", r.rec.ID, "after_seq", r.rec.Cursor, "err", err, "in", wait)
		if err := r.sleep(ctx, wait); err != nil {
			return err
		}
		wait = min(2*wait, mostBackoff)
	}
}

// webhook is the job's webhook as the registry has it now.
func (r *runner) webhook() (*registry.Webhook, error) {
	wh, ok := r.m.cfg.Webhooks.Get(r.rec.WebhookID)
	switch {
	case !ok || wh.Workspace != r.rec.Workspace:
		return nil, end("the webhook was deleted")
	case wh.Disabled:
		return nil, end("the webhook was disabled")
	case wh.EventType != r.rec.EventType:
		return nil, end("the webhook's event type changed from %s to %s", r.rec.EventType, wh.EventType)
	}
	return wh, nil
}

// pass reads the stream from where the job stands to its end.
func (r *runner) pass(ctx context.Context) error {
	st, err := r.m.cfg.JetStream.Stream(ctx, r.m.cfg.EventStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return end("the events stream %s does not exist", r.m.cfg.EventStream)
	}
	if err != nil {
		return err
	}
	subject := r.m.cfg.Decoder.Subjects.For(r.rec.Workspace, r.rec.EventType)
	// The subject's last event now bounds the pass: events stored later
	// are after Until (clamped to Start's clock), so without a bound a
	// busy subject would be read on for nothing.
	last, err := st.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if last.Sequence <= r.rec.Cursor || last.Time.Before(r.rec.Since) {
		return nil
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}}
	if r.rec.Cursor > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, r.rec.Cursor+1
	} else {
		since := r.rec.Since
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	cons, err := st.OrderedConsumer(ctx, cfg)
	if err != nil {
		return err
	}
	// A small batch: the job consumes at Rate, so a big one would only
	// hold event bodies in memory.
	it, err := cons.Messages(jetstream.PullMaxMessages(64))
	if err != nil {
		return err
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop) // Next returns at once when ctx ends
	defer stop()
	for {
		if err := r.beat(ctx); err != nil {
			return err
		}
		msg, err := it.Next(jetstream.NextMaxWait(r.m.cfg.Heartbeat))
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, nats.ErrTimeout) {
			// Nothing arrived: caught up if the server has nothing
			// pending either (the bound's event may have expired).
			if info, err := cons.Info(ctx); err == nil && info.NumPending == 0 {
				return nil
			}
			continue
		}
		if err != nil {
			return err
		}
		meta, err := msg.Metadata()
		if err != nil {
			return err
		}
		done, err := r.handle(ctx, msg, meta)
		if err != nil || done {
			return err
		}
		if meta.Sequence.Stream >= last.Sequence || meta.NumPending == 0 {
			return nil
		}
	}
}

// handle takes one event through the window, the decoder, the match and
// the status filter, and re-delivers it. done: the window has ended.
func (r *runner) handle(ctx context.Context, msg jetstream.Msg, meta *jetstream.MsgMetadata) (done bool, err error) {
	seq, ts := meta.Sequence.Stream, meta.Timestamp
	if !ts.Before(r.rec.Until) {
		return true, nil
	}
	if ts.Before(r.rec.Since) { // a start time lands on the first event at or after it; be exact anyway
		r.rec.Cursor = seq
		return false, nil
	}
	// Counters change only with Cursor, so progress written at any
	// moment (a heartbeat during pace, a hand-back) counts each event
	// done exactly once, and a successor does not count it again.
	ev, err := r.m.cfg.Decoder.Decode(events.Message{Subject: msg.Subject(), MsgID: msg.Headers().Get(nats.MsgIdHdr),
		StreamSeq: seq, Timestamp: ts, Data: msg.Data()})
	if err != nil {
		r.rec.Scanned++
		r.rec.Malformed++ // fan-out dropped it too; nothing to re-deliver
		r.rec.Cursor = seq
		return false, nil
	}
	// The webhook as it is now: deleted or disabled ends the job, and a
	// changed workflowId is what the owner wants matched from now on.
	wh, err := r.webhook()
	if err != nil {
		return false, err
	}
	switch {
	case wh.WorkflowID != "" && wh.WorkflowID != ev.WorkflowID:
	case r.failed != nil && !r.failed[ev.ID]:
		r.rec.Matched++
		r.rec.Skipped++
	default:
		if err := r.pace(ctx); err != nil {
			return false, err
		}
		d := Delivery{ReplayID: r.rec.ID, Event: ev, WebhookID: r.rec.WebhookID, Workspace: r.rec.Workspace}
		if err := r.retry(ctx, "re-deliver event "+ev.ID, func() error { return r.m.cfg.Enqueuer.Replay(ctx, d) }); err != nil {
			return false, err
		}
		r.rec.Matched++
		r.rec.Enqueued++
		r.m.m.deliveries.Inc()
	}
	r.rec.Scanned++
	r.rec.Cursor = seq
	return false, nil
}

// retry runs f until it succeeds, ctx ends, or retries run out; the last
// failure then ends the job.
func (r *runner) retry(ctx context.Context, what string, f func() error) error {
	wait := firstBackoff
	for attempt := 1; ; attempt++ {
		err := f()
		if err == nil || ctx.Err() != nil {
			return ctx.Err()
		}
		if attempt == retries {
			return end("%s: %v", what, err)
		}
		r.m.log.Warn("replay step failed; retrying", "job", r.rec.ID, "step", what, "err", err, "in", wait)
		if err := r.sleep(ctx, wait); err != nil {
			return err
		}
		wait = min(2*wait, mostBackoff)
	}
}

// pace waits for the rate limiter's next token.
func (r *runner) pace(ctx context.Context) error {
	return r.sleep(ctx, r.lim.Reserve().Delay())
}

// sleep waits d, writing progress meanwhile, so a slow rate or a long
// back-off never makes the job look stale.
func (r *runner) sleep(ctx context.Context, d time.Duration) error {
	deadline := time.Now().Add(d)
	for left := d; left > 0; left = time.Until(deadline) {
		t := time.NewTimer(min(left, r.m.cfg.Heartbeat))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		if err := r.beat(ctx); err != nil {
			return err
		}
	}
	return nil
}

// beat writes progress once per Heartbeat.
func (r *runner) beat(ctx context.Context) error {
	if time.Since(r.lastBeat) < r.m.cfg.Heartbeat {
		return nil
	}
	r.lastBeat = time.Now()
	err := r.save(ctx)
	if err != nil && !errors.Is(err, errLost) && ctx.Err() == nil {
		// Keep going: the next beat tries again, and if none succeeds
		// for StaleAfter another instance takes over and our next write
		// is refused.
		r.m.log.Warn("could not write replay progress", "job", r.rec.ID, "err", err)
		return nil
	}
	return err
}

// save writes the record if nobody else has since this runner last did.
func (r *runner) save(ctx context.Context) error {
	r.rec.UpdatedAt = r.m.now()
	rev, err := r.kv.Update(ctx, jobKey(r.rec.Workspace, r.rec.ID), encode(r.rec), r.rev)
	if conflict(err) {
		return errLost
	}
	if err != nil {
		return err
	}
	r.rev = rev
	return nil
}

func (r *runner) finish(ctx context.Context, state, msg string) {
	now := r.m.now()
	r.rec.State, r.rec.Error, r.rec.FinishedAt = state, msg, now
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if err = r.save(ctx); err == nil || errors.Is(err, errLost) || ctx.Err() != nil {
			break
		}
	}
	if errors.Is(err, errLost) {
		r.m.log.Info("replay job stopped: canceled or taken over elsewhere", "job", r.rec.ID)
		return
	}
	if err != nil {
		// Left running: it goes stale, and whoever takes it over
		// resumes from Cursor and writes the end.
		r.m.log.Warn("could not record the end of a replay job", "job", r.rec.ID, "state", state, "err", err)
		return
	}
	r.m.m.outcome(state)
	r.m.release(ctx, r.kv, r.rec.Workspace, r.rec.ID)
	lvl := r.m.log.Info
	if state == StateFailed {
		lvl = r.m.log.Warn
	}
	lvl("replay ended", "job", r.rec.ID, "state", state, "error", msg, "scanned", r.rec.Scanned,
		"matched", r.rec.Matched, "enqueued", r.rec.Enqueued, "skipped", r.rec.Skipped)
}

// handBack returns the job to the queue with its progress when this
// instance stops, so another instance claims it at its next scan instead
// of after StaleAfter. If the write fails the job stays running and goes
// stale, which ends the same way, only later.
func (r *runner) handBack() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	r.rec.State, r.rec.Owner = StateQueued, ""
	if err := r.save(ctx); err != nil && !errors.Is(err, errLost) {
		r.m.log.Warn("could not hand a replay job back; another instance takes it over once stale",
			"job", r.rec.ID, "err", err)
		return
	}
	r.m.log.Info("replay job handed back", "job", r.rec.ID, "after_seq", r.rec.Cursor)
}
