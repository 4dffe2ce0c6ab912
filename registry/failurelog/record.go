package failurelog

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/webhookd/webhookd/events"
	"github.com/webhookd/webhookd/registry"
)

// hdrRecord carries a record's metadata; the payload is the event body.
const hdrRecord = "Webhookd-Failure"

// recordVersion is written in every record; a reader skips versions it
// does not know rather than guess at them.
const recordVersion = 1

// maxLastError bounds the error text kept per record: it travels in a
// header on every list, and its first kilobyte says what went wrong.
const maxLastError = 1024

// record is the header form of a registry.Failure. Unlike the bbolt
// form it keeps the workspace, which the redelivery needs and which no
// other instance could look up for a record it did not write.
type record struct {
	V              int       `json:"v"`
	ID             string    `json:"id"`
	WebhookID      string    `json:"webhookId"`
	Workspace      string    `json:"workspace"`
	EventID        string    `json:"eventId"`
	EventType      string    `json:"eventType"`
	Subject        string    `json:"subject"`
	Attempts       int       `json:"attempts"`
	LastStatus     int       `json:"lastStatus"`
	LastError      string    `json:"lastError,omitempty"`
	Reason         string    `json:"reason"`
	FirstAttemptAt time.Time `json:"firstAttemptAt"`
	LastAttemptAt  time.Time `json:"lastAttemptAt"`
	// BodyBytes is the event's size as published; BodyKept false means the
	// payload was left empty (see Config.MaxBodyBytes).
	BodyBytes int  `json:"bodyBytes"`
	BodyKept  bool `json:"bodyKept"`
}

// encodeRecord builds the message for f on subject. keepBody false leaves
// the body out.
func encodeRecord(subject string, f registry.Failure, keepBody bool) (*nats.Msg, error) {
	r := record{
		V: recordVersion, ID: f.ID, WebhookID: f.WebhookID, Workspace: f.Workspace, EventID: f.EventID,
		EventType: string(f.EventType), Subject: f.Subject, Attempts: f.Attempts, LastStatus: f.LastStatus,
		LastError: truncateUTF8(f.LastError, maxLastError), Reason: f.Reason,
		FirstAttemptAt: f.FirstAttemptAt.UTC(), LastAttemptAt: f.LastAttemptAt.UTC(),
		BodyBytes: len(f.Body), BodyKept: keepBody,
	}
	// JSON escapes every control character, so the header value is one
	// line whatever the error text holds.
	meta, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode failure %s: %w", f.ID, err)
	}
	m := nats.NewMsg(subject)
	m.Header.Set(hdrRecord, string(meta))
	if keepBody {
		m.Data = f.Body
	}
	return m, nil
}

func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

var errMalformed = errors.New("malformed failure record")

// decodeRecord reads the record of webhookID (the last token of the
// message's subject) from a message's header and payload. withBody false
// is a headers-only read: the payload is absent and not checked.
func decodeRecord(webhookID string, hdr nats.Header, data []byte, withBody bool) (registry.Failure, error) {
	vals := hdr.Values(hdrRecord)
	if len(vals) != 1 {
		return registry.Failure{}, fmt.Errorf("%w: %d %s headers", errMalformed, len(vals), hdrRecord)
	}
	var r record
	if err := json.Unmarshal([]byte(vals[0]), &r); err != nil {
		return registry.Failure{}, fmt.Errorf("%w: %v", errMalformed, err)
	}
	switch {
	case r.V != recordVersion:
		return registry.Failure{}, fmt.Errorf("%w: version %d", errMalformed, r.V)
	case r.ID == "" || strings.ContainsAny(r.ID, "\r\n"):
		return registry.Failure{}, fmt.Errorf("%w: no id", errMalformed)
	case r.WebhookID != webhookID:
		// A record on another webhook's subject must not be shown there.
		return registry.Failure{}, fmt.Errorf("%w: webhook %q on the subject of %q", errMalformed, r.WebhookID, webhookID)
	case r.BodyBytes < 0:
		return registry.Failure{}, fmt.Errorf("%w: negative body size", errMalformed)
	case withBody && r.BodyKept && len(data) != r.BodyBytes:
		return registry.Failure{}, fmt.Errorf("%w: body of %d bytes, record says %d", errMalformed, len(data), r.BodyBytes)
	case withBody && !r.BodyKept && len(data) != 0:
		return registry.Failure{}, fmt.Errorf("%w: a body the record says was left out", errMalformed)
	}
	f := registry.Failure{
		ID: r.ID, WebhookID: r.WebhookID, Workspace: r.Workspace, EventID: r.EventID,
		EventType: events.Type(r.EventType), Subject: r.Subject, Attempts: r.Attempts, LastStatus: r.LastStatus,
		LastError: r.LastError, Reason: r.Reason, FirstAttemptAt: r.FirstAttemptAt, LastAttemptAt: r.LastAttemptAt,
	}
	if withBody && r.BodyKept {
		// Copy: the payload may belong to a buffer the client reuses.
		f.Body = append([]byte(nil), data...)
	}
	return f, nil
}
