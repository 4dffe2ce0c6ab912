package events

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Finder looks events up in the events stream by id, for the management
// API (an event's deliveries, a manual retry) where no fan-out is at hand.
type Finder struct {
	// JetStream reaches the stream. Required.
	JetStream jetstream.JetStream
	// Stream names the events stream. Required.
	Stream string
	// Decoder decodes what it finds, as the fan-out does.
	Decoder Decoder
	// MaxScan bounds the messages read to find an event by its
	// Nats-Msg-Id. Zero means 10000.
	MaxScan int
}

// ErrEventNotFound: the stream no longer (or never) held the event.
var ErrEventNotFound = errors.New("events: event not in the events stream")

// Hint narrows a look-up by Nats-Msg-Id, which the stream cannot index:
// the event's subject and about when it was stored (a delivery log
// record has both). Without one, only "seq-N" ids can be found.
type Hint struct {
	Subject   string
	Published time.Time
}

// Find returns the event with id. A "seq-N" id is one direct read; a
// publisher's id is searched on the hint's subject from shortly before
// the hint's time, at most MaxScan messages.
func (f Finder) Find(ctx context.Context, id string, hint Hint) (Event, error) {
	st, err := f.JetStream.Stream(ctx, f.Stream)
	if err != nil {
		return Event{}, fmt.Errorf("events: stream %s: %w", f.Stream, err)
	}
	if n, ok := strings.CutPrefix(id, "seq-"); ok {
		if seq, err := strconv.ParseUint(n, 10, 64); err == nil && seq > 0 {
			raw, err := st.GetMsg(ctx, seq)
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				return Event{}, fmt.Errorf("event %s: %w", id, ErrEventNotFound)
			}
			if err != nil {
				return Event{}, fmt.Errorf("events: read %s: %w", id, err)
			}
			if raw.Header.Get("Nats-Msg-Id") == "" {
				return f.Decoder.Decode(Message{Subject: raw.Subject, StreamSeq: raw.Sequence, Timestamp: raw.Time, Data: raw.Data})
			}
			// That sequence holds an event with an id of its own.
			return Event{}, fmt.Errorf("event %s: %w", id, ErrEventNotFound)
		}
	}
	if hint.Subject == "" || hint.Published.IsZero() {
		return Event{}, fmt.Errorf("event %s: %w", id, ErrEventNotFound)
	}
	from := hint.Published.Add(-time.Second)
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{hint.Subject}, DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &from,
	})
	if err != nil {
		return Event{}, fmt.Errorf("events: search %s: %w", id, err)
	}
	max := f.MaxScan
	if max <= 0 {
		max = 10000
	}
	for read := 0; read < max; {
		batch, err := cons.FetchNoWait(min(max-read, 500))
		if err != nil {
			return Event{}, fmt.Errorf("events: search %s: %w", id, err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				continue
			}
			if md.Timestamp.After(hint.Published.Add(time.Minute)) {
				return Event{}, fmt.Errorf("event %s: %w", id, ErrEventNotFound)
			}
			if m.Headers().Get("Nats-Msg-Id") == id {
				return f.Decoder.Decode(Message{Subject: m.Subject(), MsgID: id, StreamSeq: md.Sequence.Stream,
					Timestamp: md.Timestamp, Data: m.Data()})
			}
		}
		if got == 0 {
			break
		}
		read += got
	}
	return Event{}, fmt.Errorf("event %s: %w", id, ErrEventNotFound)
}
