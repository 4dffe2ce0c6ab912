package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Event is one validated workflow event.
type Event struct {
	// ID identifies the event: the publisher's Nats-Msg-Id when set,
	// otherwise "seq-<stream sequence>", so it is the same on every
	// redelivery of the message.
	ID         string
	Workspace  string
	Type       Type
	WorkflowID string // empty when the event names no workflow
	Subject    string
	StreamSeq  uint64
	Timestamp  time.Time // when the stream stored it
	// Body is the event exactly as published. It aliases Message.Data.
	Body []byte
}

// Message is what the decoder needs of a stream message.
type Message struct {
	Subject   string
	MsgID     string // the Nats-Msg-Id header, if any
	StreamSeq uint64
	Timestamp time.Time
	Data      []byte
}

// Reason says why an event was rejected; it is a metric label value.
type Reason string

// Rejection reasons.
const (
	ReasonNotJSON      Reason = "not_json"
	ReasonNotObject    Reason = "not_object"
	ReasonUnknownType  Reason = "unknown_type"
	ReasonTypeMismatch Reason = "type_mismatch"
	ReasonTooLarge     Reason = "too_large"
	ReasonBadSubject   Reason = "bad_subject"
	// ReasonBadField: a known field has the wrong JSON type (e.g. a
	// numeric workflowId).
	ReasonBadField Reason = "bad_field"
)

// Reasons lists every Reason, for metric pre-registration.
var Reasons = []Reason{ReasonNotJSON, ReasonNotObject, ReasonUnknownType, ReasonTypeMismatch,
	ReasonTooLarge, ReasonBadSubject, ReasonBadField}

// DecodeError is a rejected event. Rejections are final: the message is
// terminated, never redelivered.
type DecodeError struct {
	Reason Reason
	Err    error
}

func (e *DecodeError) Error() string {
	return "event rejected (" + string(e.Reason) + "): " + e.Err.Error()
}
func (e *DecodeError) Unwrap() error { return e.Err }

func reject(r Reason, format string, args ...any) error {
	return &DecodeError{Reason: r, Err: fmt.Errorf(format, args...)}
}

// DefaultMaxBytes is the event size limit when Decoder.MaxBytes is zero.
const DefaultMaxBytes = 256 << 10

// Decoder validates stream messages into Events.
type Decoder struct {
	Subjects Subjects
	// MaxBytes is the largest accepted body. Zero means 256 KiB.
	MaxBytes int
}

// envelope holds the only fields webhookd reads; the rest of the body is
// passed through untouched.
type envelope struct {
	Type       *string         `json:"type"`
	WorkflowID json.RawMessage `json:"workflowId"`
}

// Decode validates m. Rules, in order: size, subject, JSON, object, type
// known, type equal to the subject's, workflowId a string or null.
func (d Decoder) Decode(m Message) (Event, error) {
	limit := d.MaxBytes
	if limit <= 0 {
		limit = DefaultMaxBytes
	}
	if len(m.Data) > limit {
		return Event{}, reject(ReasonTooLarge, "%d bytes is over the %d byte limit", len(m.Data), limit)
	}
	ws, subjType, err := d.Subjects.Parse(m.Subject)
	if err != nil {
		if errors.Is(err, ErrUnknownType) {
			return Event{}, &DecodeError{Reason: ReasonUnknownType, Err: err}
		}
		return Event{}, &DecodeError{Reason: ReasonBadSubject, Err: err}
	}
	if first := firstNonSpace(m.Data); first != '{' {
		if first != 0 && json.Valid(m.Data) {
			return Event{}, reject(ReasonNotObject, "body is JSON but not an object")
		}
		return Event{}, reject(ReasonNotJSON, "body is not valid JSON")
	}
	// Unmarshal checks the whole body is valid JSON before it decodes, so
	// the body is scanned once more here, not twice.
	var env envelope
	if err := json.Unmarshal(m.Data, &env); err != nil {
		var syntax *json.SyntaxError
		if errors.As(err, &syntax) {
			return Event{}, reject(ReasonNotJSON, "body is not valid JSON")
		}
		// A valid object, so only a field of the wrong type gets here.
		return Event{}, reject(ReasonBadField, "type must be a string: %v", err)
	}
	if env.Type == nil || !Type(*env.Type).Valid() {
		return Event{}, reject(ReasonUnknownType, "body type is missing or unknown")
	}
	if Type(*env.Type) != subjType {
		return Event{}, reject(ReasonTypeMismatch, "body type %q differs from subject type %q", *env.Type, subjType)
	}
	var wf string
	if len(env.WorkflowID) > 0 && string(env.WorkflowID) != "null" {
		if err := json.Unmarshal(env.WorkflowID, &wf); err != nil {
			return Event{}, reject(ReasonBadField, "workflowId must be a string or null")
		}
	}
	id := m.MsgID
	if id == "" {
		id = "seq-" + strconv.FormatUint(m.StreamSeq, 10)
	}
	return Event{
		ID: id, Workspace: ws, Type: subjType, WorkflowID: wf, Subject: m.Subject,
		StreamSeq: m.StreamSeq, Timestamp: m.Timestamp, Body: m.Data,
	}, nil
}

func firstNonSpace(b []byte) byte {
	for _, c := range b {
		switch c {
		case ' ', '\t', '\n', '\r':
			continue
		}
		return c
	}
	return 0
}
