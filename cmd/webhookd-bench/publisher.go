package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/webhookd/webhookd/events"
)

// pacer is the open-model send schedule: event i is due at start + i/rate,
// computed from the start rather than accumulated, so a million events do
// not drift. rate <= 0 means no schedule (each event is due when sent).
type pacer struct {
	start time.Time
	rate  float64
}

// due is event i's scheduled send time.
func (p pacer) due(i int) time.Time {
	if p.rate <= 0 {
		return p.start
	}
	return p.start.Add(time.Duration(float64(i) * float64(time.Second) / p.rate))
}

// generate calls send for events 0..n-1 in order, each with the time its
// latency counts from. Paced, that is the event's scheduled time even
// when the generator runs late (a slow publisher cannot hide queueing
// delay); unpaced, it is the moment the event is handed over.
func generate(ctx context.Context, n int, p pacer, send func(seq int, sentAt time.Time) error) error {
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for i := 0; i < n; i++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		sentAt := time.Now()
		if p.rate > 0 {
			sentAt = p.due(i)
			if wait := time.Until(sentAt); wait > 0 {
				timer.Reset(wait)
				select {
				case <-timer.C:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
		}
		if err := send(i, sentAt); err != nil {
			return err
		}
	}
	return nil
}

// eventShape is everything a bench event's bytes derive from, so the
// receiver can rebuild them and check the delivery is byte-identical.
type eventShape struct {
	WorkflowID string
	RunID      string // unique per scenario: also keys Nats-Msg-Id
	Pad        string
}

func newEventShape(runID string, bodyBytes int) eventShape {
	s := eventShape{WorkflowID: "wf-" + runID, RunID: runID}
	// Sized with a present-day timestamp (19 digits) and a 4-digit sequence.
	if n := bodyBytes - len(s.appendBody(nil, 1000, time.Unix(1_700_000_000, 0))); n > 0 {
		s.Pad = strings.Repeat("x", n)
	}
	return s
}

// appendBody appends event seq's JSON. Everything but benchSeq and sentAt
// is fixed per run; sequence and time have varying width, so the size is
// BodyBytes give or take a few bytes.
func (s eventShape) appendBody(dst []byte, seq int, sentAt time.Time) []byte {
	dst = append(dst, `{"type":"`...)
	dst = append(dst, events.WorkflowRunCompleted...)
	dst = append(dst, `","workflowId":"`...)
	dst = append(dst, s.WorkflowID...)
	dst = append(dst, `","workflowRunId":"`...)
	dst = append(dst, s.RunID...)
	dst = append(dst, '-')
	dst = strconv.AppendInt(dst, int64(seq), 10)
	dst = append(dst, `","benchSeq":`...)
	dst = strconv.AppendInt(dst, int64(seq), 10)
	dst = append(dst, `,"sentAt":`...)
	dst = strconv.AppendInt(dst, sentAt.UnixNano(), 10)
	dst = append(dst, `,"result":{"pad":"`...)
	dst = append(dst, s.Pad...)
	return append(dst, `"}}`...)
}

func (s eventShape) msgID(seq int) string { return s.RunID + "-" + strconv.Itoa(seq) }

// publisher sends a scenario's events through JetStream, at most window
// of them awaiting their ack, and checks every ack.
type publisher struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	subject string
	shape   eventShape
	window  int
}

type publisherConfig struct {
	NATSURL string
	Subject string // <prefix>.<workspace>.<type>
	Shape   eventShape
	Window  int
}

func newPublisher(cfg publisherConfig) (*publisher, error) {
	nc, err := nats.Connect(cfg.NATSURL, nats.Name("webhookd-bench"), nats.Timeout(10*time.Second))
	if err != nil {
		return nil, fmt.Errorf("publisher: connect to NATS: %w", err)
	}
	// The bench's own window is the bound; nats.go's is set above it so
	// PublishMsgAsync never stalls behind our back.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(cfg.Window+16),
		jetstream.WithPublishAsyncTimeout(30*time.Second))
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("publisher: jetstream: %w", err)
	}
	return &publisher{nc: nc, js: js, subject: cfg.Subject, shape: cfg.Shape, window: cfg.Window}, nil
}

func (p *publisher) close() { p.nc.Close() }

// pubResult is what a publish run achieved.
type pubResult struct {
	Generated int
	Acked     int
	Retried   int // acks that failed and were published again (same Nats-Msg-Id)
	Lag       time.Duration
	Elapsed   time.Duration // first send to last ack
}

// errPublish is a publish that failed even when retried.
var errPublish = errors.New("publish failed")

// run publishes n events on schedule pace (see generate) and returns once
// all are acked. A failed ack is retried synchronously with the same
// Nats-Msg-Id, which JetStream dedupes, so a lost ack cannot double an
// event.
func (p *publisher) run(ctx context.Context, n int, pace pacer) (pubResult, error) {
	type inflight struct {
		seq int
		msg *nats.Msg
		fut jetstream.PubAckFuture
	}
	var res pubResult
	room := make(chan struct{}, p.window)    // one token per un-acked publish
	pending := make(chan inflight, p.window) // never blocks: room bounds it
	var acked, retried int
	var ackErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		for f := range pending {
			if err := p.await(ctx, f.fut, f.msg, &retried); err != nil {
				if ackErr == nil {
					ackErr = fmt.Errorf("event %d: %w", f.seq, err)
				}
			} else {
				acked++
			}
			<-room
		}
	})
	start := time.Now()
	genErr := generate(ctx, n, pace, func(seq int, sentAt time.Time) error {
		select {
		case room <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		if pace.rate <= 0 {
			// Unpaced, the window is the only brake: the time is taken
			// after waiting for room, so that wait is not counted as this
			// event's delivery latency.
			sentAt = time.Now()
		} else {
			res.Lag = max(res.Lag, time.Since(sentAt))
		}
		msg := &nats.Msg{Subject: p.subject, Header: nats.Header{}}
		msg.Header.Set(jetstream.MsgIDHeader, p.shape.msgID(seq))
		msg.Data = p.shape.appendBody(make([]byte, 0, 256+len(p.shape.Pad)), seq, sentAt)
		fut, err := p.js.PublishMsgAsync(msg)
		if err != nil {
			<-room
			return fmt.Errorf("%w: event %d: %w", errPublish, seq, err)
		}
		res.Generated++
		pending <- inflight{seq: seq, msg: msg, fut: fut}
		return nil
	})
	close(pending)
	wg.Wait()
	res.Acked, res.Retried, res.Elapsed = acked, retried, time.Since(start)
	if genErr != nil {
		return res, genErr
	}
	return res, ackErr
}

// await waits for one ack; on failure it publishes the message again,
// synchronously and at most three times.
func (p *publisher) await(ctx context.Context, fut jetstream.PubAckFuture, msg *nats.Msg, retried *int) error {
	select {
	case ack := <-fut.Ok():
		if ack.Duplicate {
			// The id is fresh per run: a duplicate means another
			// publisher is reusing it and this event was not stored.
			return fmt.Errorf("%w: JetStream reports Nats-Msg-Id %s as a duplicate", errPublish, msg.Header.Get(jetstream.MsgIDHeader))
		}
		return nil
	case <-fut.Err():
	case <-ctx.Done():
		return ctx.Err()
	}
	var err error
	for try := 0; try < 3 && ctx.Err() == nil; try++ {
		*retried++
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err = p.js.PublishMsg(actx, msg)
		cancel()
		if err == nil {
			return nil
		}
	}
	if err == nil {
		err = ctx.Err()
	}
	return fmt.Errorf("%w: %w", errPublish, err)
}
