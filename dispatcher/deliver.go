package dispatcher

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/webhookd/webhookd/dispatcher/breaker"
	"github.com/webhookd/webhookd/dispatcher/retry"
	"github.com/webhookd/webhookd/dispatcher/signature"
	"github.com/webhookd/webhookd/dispatcher/transport"
	"github.com/webhookd/webhookd/registry"
	"github.com/webhookd/webhookd/registry/deliverylog"
	"github.com/webhookd/webhookd/registry/ssrf"
)

// maxResponseBytes is how much of a receiver's answer is read (and thrown
// away) so the connection can be reused.
const maxResponseBytes = 64 << 10

// target is what an attempt needs from a webhook, parsed once and cached
// for as long as the registry keeps the same *Webhook.
type target struct {
	wh  *registry.Webhook
	url *url.URL
	// keys sign its deliveries: the secret, and during a rotation's grace
	// period the previous one too (Keys checks the period at signing).
	keys signature.Keys
}

// receive is the consume callback of the deliveries consumer: it decodes the
// job and hands it to its host's lane without blocking on I/O.
func (d *Dispatcher) receive(msg jetstream.Msg) {
	if d.stopping.Load() {
		d.handBack(msg, d.shutdownHandBack())
		return
	}
	// The delivery bound (Config.MaxDeliveries) is kept here rather than by
	// the consumer's MaxDeliver, which would leave the message in the
	// stream, never delivered again and never recorded.
	n := delivered(msg)
	poison := n > uint64(d.cfg.MaxDeliveries)
	if msg.Subject() == d.bundleSubject() {
		if poison {
			d.giveUpBundle(msg, n)
			return
		}
		d.expand(msg)
		return
	}
	j, err := decodeJob(msg.Headers(), msg.Data())
	if err != nil {
		d.m.dropped.WithLabelValues("invalid_job").Inc()
		d.log.Error("dropping malformed delivery job", "subject", msg.Subject(), "err", err)
		_ = msg.Term()
		return
	}
	if poison {
		// The attempts this copy knows of are those before it: each
		// delivery may have made attempt j.Attempt again, or not (a crash).
		why := fmt.Sprintf("handed out %d times without being settled, each time as attempt %d", n-1, j.Attempt)
		if j.LastError != "" {
			why += "; the attempt before: " + j.LastError
		}
		j.LastError = truncate(why, maxErrorLen)
		d.giveUpAfter(msg, j, reasonMaxDeliveries, j.Attempt-1)
		return
	}
	halfSpent := n > uint64(d.cfg.MaxDeliveries)/2
	t, ok, err := d.resolve(j.WebhookID)
	if err != nil {
		// Cannot tell deleted from not-yet-known: ask again shortly. An
		// unreachable registry is no fault of the job's, so once it has
		// used half its deliveries it waits as a fresh copy.
		d.log.Warn("unknown webhook and the shared registry is unreachable; job handed back",
			"webhook", j.WebhookID, "err", err)
		if halfSpent {
			d.setAside(msg, &j, time.Now().Add(jitter(2*time.Second)), "defer")
			return
		}
		d.handBackLater(msg, jitter(2*time.Second), time.Minute)
		return
	}
	if !ok {
		// Deleted subscriptions stop receiving at once.
		d.m.dropped.WithLabelValues("webhook_deleted").Inc()
		d.health.br.Reset(j.WebhookID)
		_ = msg.Ack()
		return
	}
	if halfSpent {
		msg = &refreshing{Msg: msg, d: d, job: j}
	}
	if !t.wh.Disabled {
		if at, parked := d.parkedUntil(j.WebhookID, time.Now()); parked {
			d.setAside(msg, &j, at, "delivery")
			return
		}
	}
	if ok, wait := d.enqueue(queued{msg: msg, job: j, host: t.url.Host, queued: time.Now()}); !ok {
		// Its host is saturated (or unproven hosts hold their share of
		// the window already): set it aside, outside the ack-pending
		// window, rather than NAK it and keep the slot.
		d.setAside(msg, &j, time.Now().Add(jitter(wait)), "defer")
	}
}

// setAside parks (stage "delivery") or defers ("defer") a job taken from a
// deliveries consumer, unless its stored copy could never fit the server's
// max payload: then it is recorded as failed, reason too_large, rather
// than handed back forever.
func (d *Dispatcher) setAside(msg jetstream.Msg, j *job, at time.Time, stage string) {
	if m := d.parkMsg(j, at); !d.fits(m) {
		f := *j
		if f.LastError == "" {
			f.LastError = tooLargeError(m, d.cfg.Conn.MaxPayload())
		}
		d.giveUpAfter(msg, f, reasonTooLarge, j.Attempt-1)
		return
	}
	d.parkAsync(msg, j, at, stage)
}

// refreshing is a job message that has used half of MaxDeliveries. When a
// lane hands it back because its host is busy, it is stored again as a
// fresh message, whose count starts afresh, and this copy is acked:
// waiting for capacity is no fault of the job's and must not exhaust the
// bound. (A lane hands a job back before its ack deadline passes, so
// normally no other instance holds it meanwhile.) The hand-backs that should count (its next
// state could not be stored) go through handBackLater, which unwraps it.
type refreshing struct {
	jetstream.Msg
	d   *Dispatcher
	job job
}

func (m *refreshing) NakWithDelay(delay time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := m.d.js.PublishMsg(ctx, m.d.parkMsg(&m.job, time.Now().Add(delay))); err != nil {
		return m.Msg.NakWithDelay(delay)
	}
	return m.Msg.Ack()
}

// delivered is how often JetStream has handed msg out, this time included.
func delivered(msg jetstream.Msg) uint64 {
	meta, err := msg.Metadata()
	if err != nil {
		return 1
	}
	return meta.NumDelivered
}

// handBackLater hands msg back after base, doubled for every delivery it
// has had before, up to ceiling (a base above it is kept): a message that
// keeps coming back because something it needs is down comes back ever
// less often, so MaxDeliveries of them last tens of minutes, not seconds,
// and the load of an outage fades. It always counts against the bound.
func (d *Dispatcher) handBackLater(msg jetstream.Msg, base, ceiling time.Duration) {
	if r, ok := msg.(*refreshing); ok {
		msg = r.Msg
	}
	d.handBack(msg, grow(base, delivered(msg), ceiling))
}

func grow(base time.Duration, n uint64, ceiling time.Duration) time.Duration {
	for i := uint64(1); i < n && base > 0 && base < ceiling; i++ {
		base = min(2*base, ceiling)
	}
	return base
}

// resolve finds the webhook of a job: in the local registry, else (with
// several instances, the job may have come before the registration) in the
// shared one. An error means it cannot tell whether the webhook exists.
func (d *Dispatcher) resolve(webhookID string) (*target, bool, error) {
	t, ok := d.target(webhookID)
	if ok || d.cfg.Lookup == nil {
		return t, ok, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_, ok, err := d.cfg.Lookup.Lookup(ctx, webhookID)
	cancel()
	if err != nil || !ok {
		return nil, false, err
	}
	t, ok = d.target(webhookID)
	return t, ok, nil
}

func (d *Dispatcher) target(webhookID string) (*target, bool) {
	wh, ok := d.cfg.Subscriptions.Get(webhookID)
	if !ok {
		d.targets.Delete(webhookID)
		return nil, false
	}
	if v, ok := d.targets.Load(webhookID); ok {
		if t := v.(*target); t.wh == wh {
			return t, true
		}
	}
	u, err := url.Parse(wh.URL)
	if err != nil {
		d.log.Error("webhook has an unparseable url", "webhook", wh.ID)
		return nil, false
	}
	keys, err := signingKeys(wh)
	if err != nil {
		d.log.Error("webhook has an unusable secret", "webhook", wh.ID)
		return nil, false
	}
	t := &target{wh: wh, url: u, keys: keys}
	d.targets.Store(webhookID, t)
	return t, true
}

// signingKeys parses a webhook's secret and, while it has one, its
// previous secret. A previous secret is kept whatever its end (the end is
// checked at signing), so that a cached target needs no refresh when the
// grace period ends.
func signingKeys(wh *registry.Webhook) (signature.Keys, error) {
	cur, err := signature.ParseSecret(wh.Secret)
	if err != nil {
		return signature.Keys{}, fmt.Errorf("secret: %w", err)
	}
	k := signature.Keys{Current: cur}
	if wh.PreviousSecret != "" && !wh.PreviousSecretUntil.IsZero() {
		if k.Previous, err = signature.ParseSecret(wh.PreviousSecret); err != nil {
			return signature.Keys{}, fmt.Errorf("previous secret: %w", err)
		}
		k.PreviousUntil = wh.PreviousSecretUntil
	}
	return k, nil
}

// pruneTargets drops the cached targets of webhooks that were deleted or
// changed since, so the cache (which holds plaintext secrets) is bounded
// by the live webhooks and forgets a deleted one's secret within a prune
// interval, even if no job of it ever comes again. It costs a registry
// lookup per cached target, hence Run calls it every 30 s.
func (d *Dispatcher) pruneTargets() {
	d.targets.Range(func(k, v any) bool {
		if wh, ok := d.cfg.Subscriptions.Get(k.(string)); !ok || wh != v.(*target).wh {
			// Only this entry: a fresher one stored meanwhile stays.
			d.targets.CompareAndDelete(k, v)
		}
		return true
	})
}

type errKind int

const (
	errNone errKind = iota
	errTimeout
	errNetwork
	errBlocked
)

// attemptResult is what run needs to know of an attempt.
type attemptResult struct {
	kind   errKind
	status int
}

// attempt makes one HTTP attempt for q, reports it to the webhook's
// circuit and health, and settles its message.
func (d *Dispatcher) attempt(q queued, t *target, probe bool) attemptResult {
	j := q.job
	now := time.Now()
	if j.FirstAttempt.IsZero() {
		j.FirstAttempt = now
	}
	status, retryAfter, kind, snippet, err := d.post(t, &j, now, d.cfg.Attempts != nil)
	elapsed := time.Since(now)
	res := attemptResult{kind: kind, status: status}
	o := outcome{webhookID: j.WebhookID, workspace: j.Workspace, probe: probe, status: status}
	switch {
	case kind == errNone && status >= 200 && status < 300:
		o.result = breaker.Success
	case kind == errTimeout:
		o.result, o.class = breaker.Timeout, statusClass(status, kind)
	default:
		o.result, o.class = breaker.Failure, statusClass(status, kind)
	}
	d.health.record(o, time.Now())

	if o.result == breaker.Success {
		d.m.attempts.WithLabelValues(string(j.EventType), "success", "2xx").Inc()
		d.m.attemptDuration.WithLabelValues("success").Observe(elapsed.Seconds())
		d.m.latency.WithLabelValues(string(j.EventType)).Observe(time.Since(j.Published).Seconds())
		if d.cfg.BeforeAck != nil {
			d.cfg.BeforeAck(j.DeliveryID)
		}
		if err := q.msg.Ack(); err != nil {
			d.log.Warn("ack delivered job", "webhook", j.WebhookID, "delivery", j.DeliveryID, "err", err)
		}
		d.logAttempt(&j, now, elapsed, status, "", snippet, deliverylog.Succeeded, time.Time{}, "")
		return res
	}

	class := statusClass(status, kind)
	d.m.attempts.WithLabelValues(string(j.EventType), "error", class).Inc()
	d.m.attemptDuration.WithLabelValues("error").Observe(elapsed.Seconds())
	j.LastStatus = status
	if err != nil {
		j.LastError = err.Error()
	} else {
		j.LastError = "HTTP " + strconv.Itoa(status)
	}
	dec := d.cfg.Retry.Next(retry.Outcome{
		Attempt: j.Attempt, Status: status, FirstAttempt: j.FirstAttempt,
		Now: time.Now(), RetryAfter: retryAfter, Rnd: rand.Float64(),
	})
	d.log.Debug("delivery attempt failed", "webhook", j.WebhookID, "delivery", j.DeliveryID,
		"attempt", j.Attempt, "status_class", class, "retry", dec.Retry, "delay", dec.Delay)
	if dec.Retry {
		d.logAttempt(&j, now, elapsed, status, class, snippet, deliverylog.Retrying, time.Now().Add(dec.Delay), "")
		d.scheduleRetry(q.msg, j, dec.Delay)
		return res
	}
	d.logAttempt(&j, now, elapsed, status, class, snippet, deliverylog.Failed, time.Time{}, dec.Reason)
	j.logged = true
	d.giveUp(q.msg, j, dec.Reason)
	return res
}

// post sends the signed request. Transport errors come back as a kind, with
// status 0. With wantSnippet, snippet is the start of the answer when it
// is text (deliverylog.Snippet).
func (d *Dispatcher) post(t *target, j *job, now time.Time, wantSnippet bool) (status int, retryAfter time.Duration, kind errKind, snippet string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), d.cfg.DeliveryTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.wh.URL, bytes.NewReader(j.Body))
	if err != nil {
		return 0, 0, errNetwork, "", fmt.Errorf("build request: %w", err)
	}
	ts := now.Unix()
	sig := t.keys.AppendHeader(make([]byte, 0, 2*(3+44)+1), j.DeliveryID, ts, j.Body, now)
	req.Header = http.Header{
		"Content-Type":      {"application/json"},
		"User-Agent":        {d.cfg.UserAgent},
		"Webhook-Id":        {j.DeliveryID},
		"Webhook-Timestamp": {strconv.FormatInt(ts, 10)},
		"Webhook-Signature": {string(sig)},
	}
	resp, err := d.cfg.Client.Do(req)
	if err != nil {
		return 0, 0, classify(err), "", scrub(err)
	}
	if wantSnippet {
		buf := snippetBufs.Get().(*[deliverylog.MaxResponseBytes]byte)
		n, _ := io.ReadFull(resp.Body, buf[:])
		snippet = deliverylog.Snippet(buf[:n])
		snippetBufs.Put(buf)
	}
	_ = transport.Drain(resp.Body, maxResponseBytes)
	if resp.StatusCode < 200 || resp.StatusCode >= 300 {
		if v := resp.Header.Get("Retry-After"); v != "" {
			retryAfter, _ = retry.ParseRetryAfter(v, time.Now())
		}
	}
	return resp.StatusCode, retryAfter, errNone, snippet, nil
}

// snippetBufs holds the buffers answers' first bytes are read into: one
// per attempt would be garbage on the delivery path.
var snippetBufs = sync.Pool{New: func() any { return new([deliverylog.MaxResponseBytes]byte) }}

// logAttempt hands one attempt to the delivery log, if there is one. A
// failed attempt (class set) has its error in j.LastError already.
func (d *Dispatcher) logAttempt(j *job, at time.Time, took time.Duration, status int, class string,
	snippet string, state deliverylog.State, next time.Time, reason string) {
	if d.cfg.Attempts == nil {
		return
	}
	a := deliverylog.Attempt{
		DeliveryID: j.DeliveryID, WebhookID: j.WebhookID, Workspace: j.Workspace, EventID: j.EventID,
		EventType: string(j.EventType), Published: j.Published, Attempt: j.Attempt, At: at, Duration: took,
		Status: status, ErrorClass: class, Response: snippet, State: state, NextAttemptAt: next, Reason: reason,
		Trigger: j.Trigger,
	}
	if class != "" {
		a.Error = j.LastError
	}
	d.cfg.Attempts.Record(a)
}

func classify(err error) errKind {
	var ne net.Error
	switch {
	case errors.Is(err, ssrf.ErrBlocked):
		return errBlocked
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return errTimeout
	default:
		return errNetwork
	}
}

// scrub drops the URL from a client error: URLs may carry secrets and are
// kept out of logs and failure records.
func scrub(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	return err
}

// scheduleRetry stores the job's next attempt as a JetStream scheduled
// message and then acks this copy. If the crash comes between the two, the
// redelivered copy schedules the same retry again under the same
// Nats-Msg-Id, which the server deduplicates.
func (d *Dispatcher) scheduleRetry(msg jetstream.Msg, j job, delay time.Duration) {
	next := j
	next.Attempt++
	at := time.Now().Add(delay).UTC()
	h := next.header(j.DeliveryID + ".a" + strconv.Itoa(next.Attempt))
	h[hdrSchedule] = []string{"@at " + at.Format(time.RFC3339Nano)}
	h[hdrSchedTarget] = []string{d.trialSubject(j.WebhookID)}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m := &nats.Msg{
		Subject: d.schedSubject(j.WebhookID, j.DeliveryID),
		Header:  h,
		Data:    j.Body,
	}
	_, err := d.js.PublishMsg(ctx, m)
	if isTooLarge(err) {
		// The retry's headers (the last error, the schedule) took the job
		// over the server's max payload: no retry can ever be stored.
		d.log.Warn("retry is too large to store; recording the delivery as failed", "webhook", j.WebhookID,
			"delivery", j.DeliveryID, "bytes", payloadSize(m), "max_payload", d.cfg.Conn.MaxPayload())
		d.giveUp(msg, j, reasonTooLarge)
		return
	}
	if err != nil {
		// Keep the job: JetStream redelivers it after the delay, and the
		// attempt repeats with the same number (bounded by max age and
		// by MaxDeliveries).
		d.log.Warn("schedule retry failed, handing job back", "webhook", j.WebhookID, "delivery", j.DeliveryID, "err", err)
		d.handBackLater(msg, delay, time.Minute)
		return
	}
	if err := msg.Ack(); err != nil {
		d.log.Warn("ack retried job", "webhook", j.WebhookID, "delivery", j.DeliveryID, "err", err)
	}
}

// Reasons of failures that are not the retry policy's.
const (
	// reasonTooLarge: the job, or a copy it had to be stored as, is over
	// the NATS server's max payload.
	reasonTooLarge = "too_large"
	// reasonMaxDeliveries: JetStream handed the message out more than
	// Config.MaxDeliveries times without it being settled.
	reasonMaxDeliveries = "max_deliveries"
)

// giveUp records the failed delivery after j.Attempt attempts and only
// then settles the job, so a crash in between repeats the record rather
// than losing it.
func (d *Dispatcher) giveUp(msg jetstream.Msg, j job, reason string) {
	d.giveUpAfter(msg, j, reason, j.Attempt)
}

// giveUpAfter is giveUp for a job that has had `attempts` attempts. A job
// given up for a reason of its own (too large, delivered too often) is
// terminated, so JetStream's advisories name the reason; others are acked.
func (d *Dispatcher) giveUpAfter(msg jetstream.Msg, j job, reason string, attempts int) {
	if err := d.recordFailure(j, reason, attempts); err != nil {
		d.log.Error("record failed delivery; will retry recording", "webhook", j.WebhookID, "delivery", j.DeliveryID, "err", err)
		d.handBackLater(msg, 5*time.Second, time.Minute)
		return
	}
	var err error
	if reason == reasonTooLarge || reason == reasonMaxDeliveries {
		err = msg.TermWithReason(reason)
	} else {
		err = msg.Ack()
	}
	if err != nil {
		d.log.Warn("settle failed job", "webhook", j.WebhookID, "delivery", j.DeliveryID, "err", err)
	}
}

// recordFailure keeps j as a failed delivery (registry.Failure, retryable
// through the API) and counts it.
func (d *Dispatcher) recordFailure(j job, reason string, attempts int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := d.cfg.Failures.RecordFailure(ctx, registry.Failure{
		ID: j.DeliveryID, WebhookID: j.WebhookID, Workspace: j.Workspace, EventID: j.EventID,
		EventType: j.EventType, Subject: j.Subject, Attempts: max(attempts, 0), LastStatus: j.LastStatus,
		LastError: j.LastError, Reason: reason, FirstAttemptAt: j.FirstAttempt, LastAttemptAt: time.Now(),
		Body: bytes.Clone(j.Body),
	})
	if err != nil {
		return fmt.Errorf("dispatcher: record failure of delivery %s: %w", j.DeliveryID, err)
	}
	if !j.logged && d.cfg.Attempts != nil {
		// Given up without an attempt of its own (too large, handed out
		// too often, webhook disabled): the log says so.
		d.cfg.Attempts.Record(deliverylog.Attempt{
			DeliveryID: j.DeliveryID, WebhookID: j.WebhookID, Workspace: j.Workspace, EventID: j.EventID,
			EventType: string(j.EventType), Published: j.Published, Attempt: max(attempts, 0), At: time.Now(),
			Error: truncate(j.LastError, maxErrorLen), State: deliverylog.Failed, Reason: reason, Trigger: j.Trigger,
		})
	}
	d.m.failed.WithLabelValues(string(j.EventType), reason).Inc()
	d.log.Warn("delivery failed for good", "webhook", j.WebhookID, "delivery", j.DeliveryID,
		"attempts", attempts, "reason", reason, "last_status", j.LastStatus)
	return nil
}

// giveUpBundle records every delivery of a bundle that JetStream handed
// out n times, more than MaxDeliveries, and terminates it.
func (d *Dispatcher) giveUpBundle(msg jetstream.Msg, n uint64) {
	b, err := decodeBundle(msg.Headers(), msg.Data())
	if err != nil {
		d.m.dropped.WithLabelValues("invalid_job").Inc()
		d.log.Error("dropping malformed bundle", "subject", msg.Subject(), "err", err)
		_ = msg.Term()
		return
	}
	for _, id := range b.Webhooks {
		j := b.jobFor(id, signature.DeliveryID(b.EventID, id))
		j.LastError = fmt.Sprintf("bundled with other deliveries, handed out %d times without being settled", n-1)
		if err := d.recordFailure(j, reasonMaxDeliveries, 0); err != nil {
			d.log.Error("record failed delivery; will retry recording", "webhook", id, "delivery", j.DeliveryID, "err", err)
			d.handBackLater(msg, 5*time.Second, time.Minute)
			return
		}
	}
	if err := msg.TermWithReason(reasonMaxDeliveries); err != nil {
		d.log.Warn("settle failed bundle", "bundle", b.ID, "err", err)
	}
}
