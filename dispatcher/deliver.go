package dispatcher

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/webhookd/webhookd/dispatcher/breaker"
	"github.com/webhookd/webhookd/dispatcher/retry"
	"github.com/webhookd/webhookd/dispatcher/signature"
	"github.com/webhookd/webhookd/dispatcher/transport"
	"github.com/webhookd/webhookd/registry"
	"github.com/webhookd/webhookd/registry/ssrf"
)

// maxResponseBytes is how much of a receiver's answer is read (and thrown
// away) so the connection can be reused.
const maxResponseBytes = 64 << 10

// target is what an attempt needs from a webhook, parsed once and cached
// for as long as the registry keeps the same *Webhook.
type target struct {
	wh     *registry.Webhook
	url    *url.URL
	secret signature.Secret
}

// receive is the consume callback of the deliveries consumer: it decodes the
// job and hands it to its host's lane without blocking on I/O.
func (d *Dispatcher) receive(msg jetstream.Msg) {
	if d.stopping.Load() {
		d.handBack(msg, 0)
		return
	}
	if msg.Subject() == d.bundleSubject() {
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
	t, ok, err := d.resolve(j.WebhookID)
	if err != nil {
		// Cannot tell deleted from not-yet-known: ask again shortly.
		d.log.Warn("unknown webhook and the shared registry is unreachable; job handed back",
			"webhook", j.WebhookID, "err", err)
		d.handBack(msg, jitter(2*time.Second))
		return
	}
	if !ok {
		// Deleted subscriptions stop receiving at once.
		d.m.dropped.WithLabelValues("webhook_deleted").Inc()
		d.health.br.Reset(j.WebhookID)
		_ = msg.Ack()
		return
	}
	if !t.wh.Disabled {
		if at, parked := d.parkedUntil(j.WebhookID, time.Now()); parked {
			d.parkAsync(msg, &j, at, "delivery")
			return
		}
	}
	if ok, wait := d.enqueue(queued{msg: msg, job: j, host: t.url.Host, queued: time.Now()}); !ok {
		// Its host is saturated (or unproven hosts hold their share of
		// the window already): set it aside, outside the ack-pending
		// window, rather than NAK it and keep the slot.
		d.parkAsync(msg, &j, time.Now().Add(jitter(wait)), "defer")
	}
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
	sec, err := signature.ParseSecret(wh.Secret)
	if err != nil {
		d.log.Error("webhook has an unusable secret", "webhook", wh.ID)
		return nil, false
	}
	t := &target{wh: wh, url: u, secret: sec}
	d.targets.Store(webhookID, t)
	return t, true
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
	status, retryAfter, kind, err := d.post(t, &j, now)
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
		d.scheduleRetry(q.msg, j, dec.Delay)
		return res
	}
	d.giveUp(q.msg, j, dec.Reason)
	return res
}

// post sends the signed request. Transport errors come back as a kind, with
// status 0.
func (d *Dispatcher) post(t *target, j *job, now time.Time) (status int, retryAfter time.Duration, kind errKind, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), d.cfg.DeliveryTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.wh.URL, bytes.NewReader(j.Body))
	if err != nil {
		return 0, 0, errNetwork, fmt.Errorf("build request: %w", err)
	}
	ts := now.Unix()
	sig := t.secret.AppendSignature(make([]byte, 0, 64), j.DeliveryID, ts, j.Body)
	req.Header = http.Header{
		"Content-Type":      {"application/json"},
		"User-Agent":        {d.cfg.UserAgent},
		"Webhook-Id":        {j.DeliveryID},
		"Webhook-Timestamp": {strconv.FormatInt(ts, 10)},
		"Webhook-Signature": {string(sig)},
	}
	resp, err := d.cfg.Client.Do(req)
	if err != nil {
		return 0, 0, classify(err), scrub(err)
	}
	_ = transport.Drain(resp.Body, maxResponseBytes)
	if resp.StatusCode < 200 || resp.StatusCode >= 300 {
		if v := resp.Header.Get("Retry-After"); v != "" {
			retryAfter, _ = retry.ParseRetryAfter(v, time.Now())
		}
	}
	return resp.StatusCode, retryAfter, errNone, nil
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
	_, err := d.js.PublishMsg(ctx, &nats.Msg{
		Subject: d.schedSubject(j.WebhookID, j.DeliveryID),
		Header:  h,
		Data:    j.Body,
	})
	if err != nil {
		// Keep the job: JetStream redelivers it after the delay, and the
		// attempt repeats with the same number (bounded by max age).
		d.log.Warn("schedule retry failed, handing job back", "webhook", j.WebhookID, "delivery", j.DeliveryID, "err", err)
		d.handBack(msg, delay)
		return
	}
	if err := msg.Ack(); err != nil {
		d.log.Warn("ack retried job", "webhook", j.WebhookID, "delivery", j.DeliveryID, "err", err)
	}
}

// giveUp records the failed delivery and only then acks the job, so a
// crash in between repeats the record rather than losing it.
func (d *Dispatcher) giveUp(msg jetstream.Msg, j job, reason string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := d.cfg.Failures.RecordFailure(ctx, registry.Failure{
		ID: j.DeliveryID, WebhookID: j.WebhookID, Workspace: j.Workspace, EventID: j.EventID,
		EventType: j.EventType, Subject: j.Subject, Attempts: j.Attempt, LastStatus: j.LastStatus,
		LastError: j.LastError, Reason: reason, FirstAttemptAt: j.FirstAttempt, LastAttemptAt: time.Now(),
		Body: bytes.Clone(j.Body),
	})
	if err != nil {
		d.log.Error("record failed delivery; will retry recording", "webhook", j.WebhookID, "delivery", j.DeliveryID, "err", err)
		d.handBack(msg, 5*time.Second)
		return
	}
	d.m.failed.WithLabelValues(string(j.EventType), reason).Inc()
	d.log.Warn("delivery failed for good", "webhook", j.WebhookID, "delivery", j.DeliveryID,
		"attempts", j.Attempt, "reason", reason, "last_status", j.LastStatus)
	if err := msg.Ack(); err != nil {
		d.log.Warn("ack failed job", "webhook", j.WebhookID, "delivery", j.DeliveryID, "err", err)
	}
}
