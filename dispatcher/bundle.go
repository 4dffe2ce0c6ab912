package dispatcher

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/webhookd/webhookd/events"
)

// A bundle is one event owed to several webhooks that cannot take it yet:
// new or failing ones, and ones whose circuit is open. It travels as one
// message, the event's bytes with the webhook ids in a header, instead of
// one job per webhook. With many dead destinations that is the difference
// between one stored message per event and hundreds: the fan-out's cost
// stays that of the healthy webhooks.
//
// The probation consumer expands a bundle: webhooks that can take a
// delivery now get their job, the rest stay in a smaller bundle scheduled
// for the soonest time one of them can (its circuit's half-open time, or a
// delivery timeout for a host that is busy timing out).
type bundle struct {
	ID        string // stable for the event and chunk; names its schedule subject
	Gen       int    // how often it has been re-bundled; part of the dedupe id
	EventID   string
	Workspace string
	EventType events.Type
	Subject   string
	Published time.Time
	Webhooks  []string
	Body      []byte
}

// Header names of a bundle; Webhookd-Event and Webhookd-Subject are shared
// with jobs.
const (
	hdrBundle   = "Webhookd-Bundle"   // "1 <id> <gen> <workspace> <type> <published>"
	hdrWebhooks = "Webhookd-Webhooks" // space-separated webhook ids
	hdrProbe    = "Webhookd-Probe"    // "1" on a job that carries its circuit's probe grant
)

// maxBundle bounds the webhooks in one bundle message, so its header stays
// a few kilobytes whatever the fan-out. It is part of the bundle format
// (decodeBundle refuses more), and every instance must accept what any
// other writes, so it is not a Config field.
const maxBundle = 256

// bundleID names chunk n of event eventID's bundles.
func bundleID(eventID string, chunk int) string {
	h := sha256.New()
	h.Write([]byte(eventID))
	h.Write([]byte{0})
	h.Write(strconv.AppendInt(nil, int64(chunk), 10))
	var sum [sha256.Size]byte
	return "pk_" + hex.EncodeToString(h.Sum(sum[:0])[:16])
}

func (b *bundle) header() nats.Header {
	var sb strings.Builder
	sb.Grow(64 + len(b.Webhooks)*30)
	fmt.Fprintf(&sb, "1 %s %d %s %s %d", b.ID, b.Gen, b.Workspace, b.EventType, b.Published.UnixNano())
	head := sb.String()
	sb.Reset()
	for i, id := range b.Webhooks {
		if i > 0 {
			sb.WriteByte(' ')
		}
		sb.WriteString(id)
	}
	return nats.Header{
		hdrMsgID:    {b.ID + ".g" + strconv.Itoa(b.Gen)},
		hdrBundle:   {head},
		hdrWebhooks: {sb.String()},
		hdrEvent:    {b.EventID},
		hdrSubject:  {b.Subject},
	}
}

// decodeBundle rebuilds a bundle from its message.
func decodeBundle(h nats.Header, data []byte) (bundle, error) {
	get := func(k string) string {
		if v := h[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	f := strings.Split(get(hdrBundle), " ")
	if len(f) != 6 || f[0] != "1" {
		return bundle{}, fmt.Errorf("%w: %s must be version 1 with 6 fields", errBadJob, hdrBundle)
	}
	b := bundle{ID: f[1], Workspace: f[3], EventType: events.Type(f[4]), EventID: get(hdrEvent), Subject: get(hdrSubject), Body: data}
	var err error
	if b.Gen, err = strconv.Atoi(f[2]); err != nil || b.Gen < 0 {
		return bundle{}, fmt.Errorf("%w: bundle generation must be a non-negative integer", errBadJob)
	}
	if b.Published, err = unixNanoHeader(f[5], true); err != nil {
		return bundle{}, fmt.Errorf("%w: published time: %v", errBadJob, err)
	}
	if b.ID == "" || b.EventID == "" || !b.EventType.Valid() || events.ValidateWorkspace(b.Workspace) != nil {
		return bundle{}, fmt.Errorf("%w: bundle without id, event id, event type or workspace", errBadJob)
	}
	b.Webhooks = strings.Fields(get(hdrWebhooks))
	if len(b.Webhooks) == 0 || len(b.Webhooks) > maxBundle {
		return bundle{}, fmt.Errorf("%w: a bundle holds 1 to %d webhooks, not %d", errBadJob, maxBundle, len(b.Webhooks))
	}
	return b, nil
}

// jobFor is the delivery job of the bundle's event for one webhook.
func (b *bundle) jobFor(webhookID string, deliveryID string) job {
	return job{
		DeliveryID: deliveryID, WebhookID: webhookID, Workspace: b.Workspace, EventID: b.EventID,
		EventType: b.EventType, Subject: b.Subject, Published: b.Published, Attempt: 1, Body: b.Body,
	}
}
