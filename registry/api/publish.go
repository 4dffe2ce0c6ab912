package api

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/webhookd/webhookd/events"
)

// EventPublisher stores one event in the events stream and returns once
// the stream has acknowledged it (events.Publisher provides it). msgID
// becomes the message's Nats-Msg-Id; duplicate reports that the stream
// already had that id within its deduplication window, and then seq is
// the stored message's. An error means the event was not acknowledged
// (it may still have been stored when the acknowledgement was lost).
type EventPublisher interface {
	Publish(ctx context.Context, subject string, data []byte, msgID string) (seq uint64, duplicate bool, err error)
}

// errEventsUnavailable marks a publish the events stream did not
// acknowledge: 503 EVENTS_UNAVAILABLE.
var errEventsUnavailable = errors.New("api: the events stream did not take the event")

const (
	idempotencyKeyHeader = "Idempotency-Key"
	// maxIdempotencyKeyLen bounds the Idempotency-Key header, in bytes.
	maxIdempotencyKeyLen = 256
)

// simpleFields are the members of the simple publish form.
var simpleFields = []string{"eventType", "workflowId", "payload"}

// publishedView is the answer of POST /api/events.
type publishedView struct {
	EventID   string `json:"eventId"`
	Sequence  uint64 `json:"sequence"`
	Duplicate bool   `json:"duplicate"`
}

// publishEvent stores one event in the caller's workspace, on
// <prefix>.<workspace>.<eventType> in the events stream, and answers 202
// once JetStream has acknowledged it: from then on it is delivered like
// any event published on NATS. See buildEvent for the two body forms.
//
// The Idempotency-Key header, scoped to the workspace, becomes the
// message's Nats-Msg-Id ("<workspace>:<key>", which is also the event
// id): within the events stream's deduplication window a repeat stores
// nothing and answers duplicate true with the first one's sequence.
// Without the header each request gets a fresh id ("evt_…").
func (s *Server) publishEvent(w http.ResponseWriter, r *http.Request) error {
	if s.events == nil {
		return &apiError{Status: http.StatusServiceUnavailable, Code: codeEventsUnavailable,
			Details: map[string]any{"reason": "this server cannot publish events"}}
	}
	key, err := idempotencyKey(r.Header)
	if err != nil {
		return err
	}
	limit := s.eventDecoder.MaxBytes
	if limit == 0 {
		limit = events.DefaultMaxBytes
	}
	raw, err := readJSONBody(w, r, int64(limit))
	if err != nil {
		return err
	}
	ws := workspaceFrom(r.Context())
	subject, data, err := buildEvent(s.eventDecoder, ws, raw)
	if err != nil {
		return err
	}
	msgID := "evt_" + rand.Text()
	if key != "" {
		// Scoped: the stream deduplicates on the id alone, across every
		// workspace, and one workspace's key must not swallow another's
		// event.
		msgID = ws + ":" + key
	}
	seq, dup, err := s.events.Publish(r.Context(), subject, data, msgID)
	if err != nil {
		return fmt.Errorf("%w: publish on %s: %w", errEventsUnavailable, subject, err)
	}
	s.log.DebugContext(r.Context(), "event published",
		"request_id", requestID(r.Context()), "workspace", ws, "event_id", msgID, "subject", subject,
		"sequence", seq, "duplicate", dup)
	writeAccepted(w, publishedView{EventID: msgID, Sequence: seq, Duplicate: dup})
	return nil
}

// eventsUnavailable is the 503 of a publish that was not acknowledged.
func eventsUnavailable(err error) *apiError {
	reason := "the events stream did not acknowledge the event; it may or may not be stored: " +
		"retry with the same Idempotency-Key"
	if errors.Is(err, events.ErrNotStored) {
		reason = "the events stream refused the event (it may be full); nothing was stored, retry later"
	}
	return &apiError{Status: http.StatusServiceUnavailable, Code: codeEventsUnavailable,
		Details: map[string]any{"reason": reason}}
}

// idempotencyKey returns the request's Idempotency-Key ("" without one):
// 1 to 256 bytes of printable ASCII (space to tilde), given once. Anything
// else is a 400 INVALID_IDEMPOTENCY_KEY.
func idempotencyKey(h http.Header) (string, error) {
	vs := h.Values(idempotencyKeyHeader)
	switch {
	case len(vs) == 0:
		return "", nil
	case len(vs) > 1:
		return "", badIdempotencyKey("must be given once")
	}
	k := vs[0]
	if k == "" || len(k) > maxIdempotencyKeyLen {
		return "", badIdempotencyKey(fmt.Sprintf("must be 1 to %d characters", maxIdempotencyKeyLen))
	}
	for i := 0; i < len(k); i++ {
		if k[i] < ' ' || k[i] > '~' {
			return "", badIdempotencyKey("must be printable ASCII")
		}
	}
	return k, nil
}

func badIdempotencyKey(reason string) *apiError {
	return &apiError{Status: http.StatusBadRequest, Code: codeInvalidIdempotencyKey,
		Details: map[string]any{"reason": idempotencyKeyHeader + " " + reason}}
}

// buildEvent turns a POST /api/events body into the subject and bytes to
// store, accepting exactly what dec (the fan-out's decoder) accepts, so
// that an accepted event is never dropped as malformed later. The body is
// one JSON object in either form:
//
//   - the event object, exactly as a publisher would put it on NATS: it
//     has a "type" member, and is stored byte for byte;
//   - the simple form {"eventType", "workflowId"?, "payload"?}: stored as
//     {"type":<eventType>,"workflowId":<workflowId>,<payload's members>},
//     the shape of an event published on NATS. payload must be an object
//     without "type" or "workflowId" members; other top-level members are
//     refused (400 UNKNOWN_FIELD).
//
// Errors are *apiErrors: 400 INVALID_JSON or UNKNOWN_FIELD, 413
// BODY_TOO_LARGE (over dec.MaxBytes), 422 VALIDATION_FAILED naming each bad
// field (type or eventType, workflowId, payload, or workspace when the
// caller's workspace cannot be a subject token).
func buildEvent(dec events.Decoder, ws string, body []byte) (subject string, data []byte, err error) {
	obj, err := decodeObject(bytes.NewReader(body))
	if err != nil {
		return "", nil, err
	}
	typeField, data := "type", body
	if _, ok := obj["type"]; !ok {
		typeField = "eventType"
		if data, err = simpleEvent(obj); err != nil {
			return "", nil, err
		}
	}
	var t string
	switch raw, ok := obj[typeField]; {
	case !ok || bytes.Equal(raw, []byte("null")):
		return "", nil, validationError(map[string]string{typeField: "is required"})
	case json.Unmarshal(raw, &t) != nil:
		return "", nil, validationError(map[string]string{typeField: "must be a string"})
	case !events.Type(t).Valid():
		return "", nil, validationError(map[string]string{typeField: "must be one of " + typeNames()})
	}
	if err := events.ValidateWorkspace(ws); err != nil {
		return "", nil, validationError(map[string]string{"workspace": "cannot be part of an event subject: " + err.Error()})
	}
	subject = dec.Subjects.For(ws, events.Type(t))
	if _, err := dec.Decode(events.Message{Subject: subject, Data: data}); err != nil {
		return "", nil, decodeRejection(err, typeField, dec.MaxBytes)
	}
	return subject, data, nil
}

// simpleEvent builds the event bytes of the simple form. The values are
// copied as the client wrote them, so that nothing is re-encoded.
func simpleEvent(obj map[string]json.RawMessage) ([]byte, error) {
	if ae := unknownFields(obj, simpleFields,
		"is not a member of the simple form {eventType, workflowId, payload}; an event object needs a type member"); ae != nil {
		return nil, ae
	}
	bad := map[string]string{}
	out := []byte(`{"type":`)
	eventType := obj["eventType"]
	if eventType == nil {
		eventType = json.RawMessage(`null`) // reported by the caller
	}
	out = append(out, eventType...)
	if wf, ok := obj["workflowId"]; ok && !bytes.Equal(wf, []byte("null")) {
		var s string
		if json.Unmarshal(wf, &s) != nil {
			bad["workflowId"] = "must be a string or null"
		}
		out = append(append(out, `,"workflowId":`...), wf...)
	}
	if p, ok := obj["payload"]; ok && !bytes.Equal(p, []byte("null")) {
		var members map[string]json.RawMessage
		switch {
		case json.Unmarshal(p, &members) != nil:
			bad["payload"] = "must be a JSON object"
		case holdsEnvelopeMember(members):
			bad["payload"] = "must not hold type or workflowId: give them as eventType and workflowId"
		default:
			// The object's members without its braces, as written.
			inner := bytes.TrimSpace(p)
			inner = bytes.TrimSpace(inner[1 : len(inner)-1])
			if len(inner) > 0 {
				out = append(append(out, ','), inner...)
			}
		}
	}
	if len(bad) > 0 {
		return nil, validationError(bad)
	}
	return append(out, '}'), nil
}

// holdsEnvelopeMember reports whether an object has a member the decoder
// would read as the event's type or workflowId. encoding/json matches
// struct fields case-insensitively, so "Type" or "WORKFLOWID" count too.
func holdsEnvelopeMember(members map[string]json.RawMessage) bool {
	for name := range members {
		if strings.EqualFold(name, "type") || strings.EqualFold(name, "workflowId") {
			return true
		}
	}
	return false
}

// decodeRejection maps the fan-out decoder's verdict to the answer.
func decodeRejection(err error, typeField string, maxBytes int) error {
	var de *events.DecodeError
	if !errors.As(err, &de) {
		return err
	}
	switch de.Reason {
	case events.ReasonTooLarge:
		if maxBytes == 0 {
			maxBytes = events.DefaultMaxBytes
		}
		return &apiError{Status: http.StatusRequestEntityTooLarge, Code: codeBodyTooLarge,
			Details: map[string]any{"limitBytes": maxBytes}}
	case events.ReasonNotJSON, events.ReasonNotObject:
		return invalidJSON("body must be one JSON object")
	case events.ReasonUnknownType, events.ReasonTypeMismatch:
		return validationError(map[string]string{typeField: "must be one of " + typeNames()})
	case events.ReasonBadField:
		return validationError(map[string]string{"workflowId": "must be a string or null"})
	}
	return validationError(map[string]string{"workspace": "cannot be part of an event subject"})
}

func typeNames() string {
	names := make([]string, len(events.Types))
	for i, t := range events.Types {
		names[i] = string(t)
	}
	return strings.Join(names, ", ")
}
