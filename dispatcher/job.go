package dispatcher

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/webhookd/webhookd/events"
)

// A job is one (event, subscription) delivery. It travels as a message on
// the deliveries stream whose data is the event's bytes, untouched, and whose
// headers carry everything else, so `nats stream view` shows it plainly.
type job struct {
	DeliveryID string      // webhook-id header; stable across retries
	WebhookID  string      //
	Workspace  string      //
	EventID    string      //
	EventType  events.Type //
	Subject    string      // the event's original subject
	Published  time.Time   // when the event entered the events stream
	Attempt    int         // the attempt this copy is for, from 1
	// FirstAttempt is when attempt 1 ran; zero before it has.
	FirstAttempt time.Time
	// LastStatus and LastError describe the previous attempt, for the
	// failure record when the policy gives up.
	LastStatus int
	LastError  string
	// Probe: the job carries its half-open circuit's probe grant, made
	// when a bundle was expanded. It is never re-encoded: a job handed on
	// again competes for a probe afresh.
	Probe bool
	// Trigger is what queued this delivery when it was not fan-out:
	// "retry" (a manual retry) or "replay:<id>". The delivery log shows it.
	Trigger string
	Body    []byte
	// logged: this attempt's outcome is in the delivery log already, so
	// a give-up need not be logged again. Never encoded.
	logged bool
}

// Header names. Nats-* are JetStream's; the rest are webhookd's own. The
// fixed-alphabet fields travel together in one header, because every header
// costs a scan on the server and a parse in the client for every message.
const (
	hdrMsgID       = "Nats-Msg-Id"
	hdrJob         = "Webhookd-Job" // "1 <delivery> <webhook> <workspace> <type> <published> <attempt> <first> <status>"
	hdrEvent       = "Webhookd-Event"
	hdrSubject     = "Webhookd-Subject"
	hdrLastError   = "Webhookd-Last-Error"
	hdrTrigger     = "Webhookd-Trigger"
	hdrSchedule    = "Nats-Schedule"
	hdrSchedTarget = "Nats-Schedule-Target"
)

// maxErrorLen bounds the error text carried between attempts.
const maxErrorLen = 256

// header encodes j (minus the body) as NATS headers. msgID is the dedupe id
// for this particular publish.
func (j *job) header(msgID string) nats.Header {
	var first int64
	if !j.FirstAttempt.IsZero() {
		first = j.FirstAttempt.UnixNano()
	}
	b := make([]byte, 0, 128)
	b = append(b, "1 "...)
	b = append(b, j.DeliveryID...)
	b = append(b, ' ')
	b = append(b, j.WebhookID...)
	b = append(b, ' ')
	b = append(b, j.Workspace...)
	b = append(b, ' ')
	b = append(b, j.EventType...)
	b = append(b, ' ')
	b = strconv.AppendInt(b, j.Published.UnixNano(), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(j.Attempt), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, first, 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(j.LastStatus), 10)
	h := nats.Header{
		hdrMsgID:   {msgID},
		hdrJob:     {string(b)},
		hdrEvent:   {j.EventID},
		hdrSubject: {j.Subject},
	}
	if j.LastError != "" {
		h[hdrLastError] = []string{truncate(j.LastError, maxErrorLen)}
	}
	if j.Trigger != "" {
		h[hdrTrigger] = []string{j.Trigger}
	}
	return h
}

var errBadJob = errors.New("malformed delivery job")

// decodeJob rebuilds a job from a deliveries-stream message.
func decodeJob(h nats.Header, data []byte) (job, error) {
	get := func(k string) string {
		if v := h[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	var f [9]string
	rest := get(hdrJob)
	for i := range f {
		var ok bool
		f[i], rest, ok = strings.Cut(rest, " ")
		if !ok && i != len(f)-1 {
			return job{}, fmt.Errorf("%w: %s has %d fields, want %d", errBadJob, hdrJob, i+1, len(f))
		}
	}
	if f[0] != "1" || rest != "" {
		return job{}, fmt.Errorf("%w: unknown %s version or trailing data", errBadJob, hdrJob)
	}
	j := job{
		DeliveryID: f[1],
		WebhookID:  f[2],
		Workspace:  f[3],
		EventType:  events.Type(f[4]),
		EventID:    get(hdrEvent),
		Subject:    get(hdrSubject),
		LastError:  get(hdrLastError),
		Probe:      get(hdrProbe) == "1",
		Trigger:    get(hdrTrigger),
		Body:       data,
	}
	if j.DeliveryID == "" || j.WebhookID == "" || j.EventID == "" || !j.EventType.Valid() {
		return job{}, fmt.Errorf("%w: missing delivery, webhook, event id or event type", errBadJob)
	}
	var err error
	if j.Published, err = unixNanoHeader(f[5], true); err != nil {
		return job{}, fmt.Errorf("%w: published time: %v", errBadJob, err)
	}
	if f[7] != "0" {
		if j.FirstAttempt, err = unixNanoHeader(f[7], true); err != nil {
			return job{}, fmt.Errorf("%w: first attempt time: %v", errBadJob, err)
		}
	}
	if j.Attempt, err = strconv.Atoi(f[6]); err != nil || j.Attempt < 1 {
		return job{}, fmt.Errorf("%w: attempt must be a positive integer", errBadJob)
	}
	if j.LastStatus, err = strconv.Atoi(f[8]); err != nil || j.LastStatus < 0 {
		return job{}, fmt.Errorf("%w: last status must be a non-negative integer", errBadJob)
	}
	return j, nil
}

func unixNanoHeader(s string, required bool) (time.Time, error) {
	if s == "" {
		if required {
			return time.Time{}, errors.New("missing")
		}
		return time.Time{}, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return time.Time{}, errors.New("not a positive unix-nanosecond time")
	}
	return time.Unix(0, n), nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// isTooLarge reports a publish refused because the message is over the
// server's max payload, which no retry can store: the client refuses it
// before sending (nats.ErrMaxPayload), or the server does.
func isTooLarge(err error) bool {
	return errors.Is(err, nats.ErrMaxPayload) || err != nil && strings.Contains(err.Error(), "maximum payload")
}

// payloadSize is what the server's max payload limits: headers and data.
func payloadSize(m *nats.Msg) int { return m.Size() - len(m.Subject) - len(m.Reply) }

// fitMargin covers what a copy of a job may vary by between building it to
// check and storing it: the digits of a time stamp.
const fitMargin = 32

// fits reports whether m can be stored under the server's max payload.
func (d *Dispatcher) fits(m *nats.Msg) bool {
	limit := d.cfg.Conn.MaxPayload()
	return limit <= 0 || int64(payloadSize(m))+fitMargin <= limit
}

func tooLargeError(m *nats.Msg, limit int64) string {
	return fmt.Sprintf("the delivery job is %d bytes with its headers, over the NATS server's max payload of %d bytes",
		payloadSize(m), limit)
}
