package events

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Errors Publish returns, wrapped with the cause; check with errors.Is.
var (
	// ErrNotStored: the events stream answered that it did not store the
	// event (for instance "maximum bytes exceeded" at the stream's cap).
	// Publishing again later may succeed.
	ErrNotStored = errors.New("events: the events stream refused the event")
	// ErrUnacknowledged: no acknowledgement arrived (NATS unreachable, no
	// stream captures the subject, time-out). The event may or may not
	// be stored: publish it again with the same message id, which the
	// stream deduplicates within its Duplicates window.
	ErrUnacknowledged = errors.New("events: the events stream did not acknowledge the event")
)

// DefaultPublishTimeout bounds the wait for JetStream's acknowledgement
// when the context has no deadline and PublisherConfig.Timeout is zero.
const DefaultPublishTimeout = 5 * time.Second

// PublisherConfig configures a Publisher. The zero value is usable.
type PublisherConfig struct {
	// Stream names the events stream (EnsureStream's StreamConfig.Name).
	// Only its acknowledgement counts: a subject another stream captures
	// is refused. Zero means DefaultStreamName.
	Stream string
	// Timeout bounds the wait for the acknowledgement when the context
	// has no earlier deadline. Zero means DefaultPublishTimeout.
	Timeout time.Duration
}

// Publisher stores events in the events stream through JetStream, as a
// publisher on NATS with acknowledgements would, so that an event it
// reports stored goes through the same fan-out as every other. It is safe
// for concurrent use.
type Publisher struct {
	js      jetstream.JetStream
	stream  string
	timeout time.Duration
}

// NewPublisher returns a Publisher over js.
func NewPublisher(js jetstream.JetStream, cfg PublisherConfig) (*Publisher, error) {
	if js == nil {
		return nil, errors.New("events: NewPublisher needs a JetStream")
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("events: negative publish timeout %s", cfg.Timeout)
	}
	p := &Publisher{js: js, stream: cfg.Stream, timeout: cfg.Timeout}
	if p.stream == "" {
		p.stream = DefaultStreamName
	}
	if p.timeout == 0 {
		p.timeout = DefaultPublishTimeout
	}
	return p, nil
}

// Publish stores data on subject with msgID as its Nats-Msg-Id (none when
// msgID is empty; the event id is then "seq-<sequence>") and returns once
// the events stream has acknowledged it: the stream sequence, and whether
// the stream already had a message with this id within its Duplicates
// window (then nothing new is stored and seq is the first one's). It does
// not validate the event; decode it with the fan-out's Decoder first.
// Errors wrap ErrNotStored or ErrUnacknowledged.
func (p *Publisher) Publish(ctx context.Context, subject string, data []byte, msgID string) (seq uint64, duplicate bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	opts := []jetstream.PublishOpt{jetstream.WithExpectStream(p.stream)}
	if msgID != "" {
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	ack, err := p.js.Publish(ctx, subject, data, opts...)
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) {
			return 0, false, fmt.Errorf("%w: %w", ErrNotStored, err)
		}
		return 0, false, fmt.Errorf("%w: %w", ErrUnacknowledged, err)
	}
	if ack.Stream != p.stream {
		// WithExpectStream makes the server refuse this; never trust an
		// acknowledgement from a stream fan-out does not read.
		return 0, false, fmt.Errorf("%w: acknowledged by stream %q, not %q", ErrNotStored, ack.Stream, p.stream)
	}
	return ack.Sequence, ack.Duplicate, nil
}
