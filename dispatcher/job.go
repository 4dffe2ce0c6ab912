package dispatcher

import (
	"errors"
	"fmt"
	"strconv"
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
	Body       []byte
}

// Header names. Nats-* are JetStream's; the rest are webhookd's own.
const (
	hdrMsgID        = "Nats-Msg-Id"
	hdrDelivery     = "Webhookd-Delivery"
	hdrWebhook      = "Webhookd-Webhook"
	hdrWorkspace    = "Webhookd-Workspace"
	hdrEvent        = "Webhookd-Event"
	hdrEventType    = "Webhookd-Event-Type"
	hdrSubject      = "Webhookd-Subject"
	hdrPublished    = "Webhookd-Published"
	hdrAttempt      = "Webhookd-Attempt"
	hdrFirstAttempt = "Webhookd-First-Attempt"
	hdrLastStatus   = "Webhookd-Last-Status"
	hdrLastError    = "Webhookd-Last-Error"
	hdrSchedule     = "Nats-Schedule"
	hdrSchedTarget  = "Nats-Schedule-Target"
)

// maxErrorLen bounds the error text carried between attempts.
const maxErrorLen = 256

// header encodes j (minus the body) as NATS headers. msgID is the dedupe id
// for this particular publish.
func (j *job) header(msgID string) nats.Header {
	h := nats.Header{
		hdrMsgID:     {msgID},
		hdrDelivery:  {j.DeliveryID},
		hdrWebhook:   {j.WebhookID},
		hdrWorkspace: {j.Workspace},
		hdrEvent:     {j.EventID},
		hdrEventType: {string(j.EventType)},
		hdrSubject:   {j.Subject},
		hdrPublished: {strconv.FormatInt(j.Published.UnixNano(), 10)},
		hdrAttempt:   {strconv.Itoa(j.Attempt)},
	}
	if !j.FirstAttempt.IsZero() {
		h[hdrFirstAttempt] = []string{strconv.FormatInt(j.FirstAttempt.UnixNano(), 10)}
	}
	if j.LastStatus != 0 {
		h[hdrLastStatus] = []string{strconv.Itoa(j.LastStatus)}
	}
	if j.LastError != "" {
		h[hdrLastError] = []string{truncate(j.LastError, maxErrorLen)}
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
	j := job{
		DeliveryID: get(hdrDelivery),
		WebhookID:  get(hdrWebhook),
		Workspace:  get(hdrWorkspace),
		EventID:    get(hdrEvent),
		EventType:  events.Type(get(hdrEventType)),
		Subject:    get(hdrSubject),
		LastError:  get(hdrLastError),
		Body:       data,
	}
	if j.DeliveryID == "" || j.WebhookID == "" || j.EventID == "" || !j.EventType.Valid() {
		return job{}, fmt.Errorf("%w: missing delivery, webhook, event id or event type", errBadJob)
	}
	var err error
	if j.Published, err = unixNanoHeader(get(hdrPublished), true); err != nil {
		return job{}, fmt.Errorf("%w: %s: %v", errBadJob, hdrPublished, err)
	}
	if j.FirstAttempt, err = unixNanoHeader(get(hdrFirstAttempt), false); err != nil {
		return job{}, fmt.Errorf("%w: %s: %v", errBadJob, hdrFirstAttempt, err)
	}
	if j.Attempt, err = strconv.Atoi(get(hdrAttempt)); err != nil || j.Attempt < 1 {
		return job{}, fmt.Errorf("%w: %s must be a positive integer", errBadJob, hdrAttempt)
	}
	if s := get(hdrLastStatus); s != "" {
		if j.LastStatus, err = strconv.Atoi(s); err != nil {
			return job{}, fmt.Errorf("%w: %s: %v", errBadJob, hdrLastStatus, err)
		}
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
