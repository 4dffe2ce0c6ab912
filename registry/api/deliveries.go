package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/webhookd/webhookd/events"
	"github.com/webhookd/webhookd/registry"
	"github.com/webhookd/webhookd/registry/deliverylog"
)

// DeliveryLog answers the delivery queries. deliverylog.Log satisfies it.
// The handlers check first that the webhook belongs to the caller's
// workspace.
type DeliveryLog interface {
	Deliveries(ctx context.Context, workspace, webhookID string, q deliverylog.Query) (deliverylog.Page, error)
	Delivery(ctx context.Context, workspace, webhookID, deliveryID string) (deliverylog.Delivery, error)
	EventDeliveries(ctx context.Context, workspace, eventID string, since time.Time) ([]deliverylog.Delivery, error)
}

// EventFinder finds an event still in the events stream (events.Finder).
// Missing events are errors wrapping events.ErrEventNotFound.
type EventFinder interface {
	Find(ctx context.Context, id string, hint events.Hint) (events.Event, error)
}

// Resender queues a fresh delivery of an event to one webhook: attempt 1,
// a fresh retry budget, the same webhook-id (dispatcher.Dispatcher). It
// returns once the delivery is durably queued.
type Resender interface {
	Resend(ctx context.Context, ev events.Event, webhookID, trigger string) error
}

const (
	defaultDeliveryLimit = 50
	maxDeliveryLimit     = 500
)

func (s *Server) deliveryLog() (DeliveryLog, error) {
	if s.deliveries == nil {
		return nil, &apiError{Status: http.StatusNotImplemented, Code: codeDeliveriesUnavailable,
			Details: map[string]any{"reason": "this server keeps no delivery log"}}
	}
	return s.deliveries, nil
}

// listDeliveries: GET /api/webhook/{id}/deliveries?status=&since=&limit=&cursor=
func (s *Server) listDeliveries(w http.ResponseWriter, r *http.Request) error {
	dl, err := s.deliveryLog()
	if err != nil {
		return err
	}
	q, err := deliveryQuery(r)
	if err != nil {
		return err
	}
	ws, id := workspaceFrom(r.Context()), r.PathValue("id")
	if _, err := s.store.Get(r.Context(), ws, id); err != nil {
		return fmt.Errorf("list deliveries of webhook %s: %w", id, err)
	}
	page, err := dl.Deliveries(r.Context(), ws, id, q)
	if errors.Is(err, deliverylog.ErrBadCursor) {
		return &apiError{Status: http.StatusBadRequest, Code: codeInvalidCursor,
			Details: map[string]any{"cursor": "not a cursor this list returned"}}
	}
	if err != nil {
		return fmt.Errorf("list deliveries of webhook %s: %w", id, err)
	}
	views := make([]deliveryView, len(page.Deliveries))
	for i, d := range page.Deliveries {
		views[i] = deliveryViewOf(d)
	}
	writeSuccess(w, views, page.NextCursor)
	return nil
}

func deliveryQuery(r *http.Request) (deliverylog.Query, error) {
	bad := map[string]string{}
	v := r.URL.Query()
	var q deliverylog.Query
	if st, ok := deliverylog.ParseState(v.Get("status")); ok {
		q.State = st
	} else {
		bad["status"] = "must be pending, retrying, succeeded or failed"
	}
	if since := v.Get("since"); since != "" {
		t, err := time.Parse(time.RFC3339, since)
		if err != nil {
			bad["since"] = "must be an RFC 3339 time, e.g. 2026-12-01T10:00:00Z"
		}
		q.Since = t
	}
	q.Limit, q.Cursor = defaultDeliveryLimit, v.Get("cursor")
	if l := v.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > maxDeliveryLimit {
			bad["limit"] = fmt.Sprintf("must be an integer between 1 and %d", maxDeliveryLimit)
		}
		q.Limit = n
	}
	if len(bad) > 0 {
		d := make(map[string]any, len(bad))
		for k, v := range bad {
			d[k] = v
		}
		return q, &apiError{Status: http.StatusBadRequest, Code: codeValidationFailed, Details: d}
	}
	return q, nil
}

// getDelivery: GET /api/webhook/{id}/deliveries/{deliveryId}
func (s *Server) getDelivery(w http.ResponseWriter, r *http.Request) error {
	d, err := s.delivery(r)
	if err != nil {
		return err
	}
	writeSuccess(w, deliveryViewOf(d), "")
	return nil
}

func (s *Server) delivery(r *http.Request) (deliverylog.Delivery, error) {
	dl, err := s.deliveryLog()
	if err != nil {
		return deliverylog.Delivery{}, err
	}
	ws, id, did := workspaceFrom(r.Context()), r.PathValue("id"), r.PathValue("deliveryId")
	if _, err := s.store.Get(r.Context(), ws, id); err != nil {
		return deliverylog.Delivery{}, fmt.Errorf("get delivery %s of webhook %s: %w", did, id, err)
	}
	d, err := dl.Delivery(r.Context(), ws, id, did)
	if err != nil {
		return deliverylog.Delivery{}, fmt.Errorf("get delivery %s of webhook %s: %w", did, id, err)
	}
	return d, nil
}

// retryDelivery: POST /api/webhook/{id}/deliveries/{deliveryId}/retry
// queues the delivery again now, as attempt 1 with a fresh retry budget
// and the same webhook-id, from the event still in the events stream (or,
// once it has left it, from the failure record's copy).
func (s *Server) retryDelivery(w http.ResponseWriter, r *http.Request) error {
	if s.resend == nil || s.finder == nil {
		return &apiError{Status: http.StatusNotImplemented, Code: codeRedeliveryUnavailable,
			Details: map[string]any{"reason": "this server cannot redeliver"}}
	}
	d, err := s.delivery(r)
	if err != nil {
		return err
	}
	ws := workspaceFrom(r.Context())
	ev, err := s.finder.Find(r.Context(), d.EventID, events.Hint{
		Subject: s.eventDecoder.Subjects.For(ws, events.Type(d.EventType)), Published: d.Published})
	switch {
	case errors.Is(err, events.ErrEventNotFound):
		f, ferr := s.failures.Failure(r.Context(), d.WebhookID, d.ID)
		if ferr != nil || len(f.Body) == 0 || s.redeliver == nil {
			return &apiError{Status: http.StatusConflict, Code: codeEventExpired,
				Details: map[string]any{"reason": "the event is no longer in the events stream and no failure record keeps its body"}}
		}
		f.Workspace = ws
		if err := s.redeliver.Redeliver(r.Context(), f); err != nil {
			return fmt.Errorf("retry delivery %s: %w", d.ID, err)
		}
	case err != nil:
		return fmt.Errorf("retry delivery %s: find event %s: %w (%w)", d.ID, d.EventID, err, registry.ErrUnavailable)
	case ev.Workspace != ws:
		return fmt.Errorf("retry delivery %s: %w", d.ID, registry.ErrNotFound)
	default:
		if err := s.resend.Resend(r.Context(), ev, d.WebhookID, "retry"); err != nil {
			return fmt.Errorf("retry delivery %s: %w", d.ID, err)
		}
	}
	s.log.InfoContext(r.Context(), "delivery retried", "request_id", requestID(r.Context()),
		"workspace", ws, "webhook_id", d.WebhookID, "delivery_id", d.ID)
	writeAccepted(w, map[string]any{"deliveryId": d.ID, "queued": true})
	return nil
}

// getEvent: GET /api/events/{eventId} — the event (while the events
// stream keeps it) and its deliveries to the workspace's webhooks: those
// the delivery log holds, and as pending every current match that has
// no attempt yet.
func (s *Server) getEvent(w http.ResponseWriter, r *http.Request) error {
	dl, err := s.deliveryLog()
	if err != nil {
		return err
	}
	ws, id := workspaceFrom(r.Context()), r.PathValue("eventId")
	var ev events.Event
	found := false
	find := func(h events.Hint) {
		if s.finder == nil || found {
			return
		}
		if e, err := s.finder.Find(r.Context(), id, h); err == nil && e.Workspace == ws {
			ev, found = e, true
		}
	}
	find(events.Hint{})
	var since time.Time
	if found {
		since = ev.Timestamp.Add(-time.Second)
	}
	ds, err := dl.EventDeliveries(r.Context(), ws, id, since)
	if err != nil {
		return fmt.Errorf("deliveries of event %s: %w", id, err)
	}
	if len(ds) > 0 {
		find(events.Hint{Subject: s.eventDecoder.Subjects.For(ws, events.Type(ds[0].EventType)), Published: ds[0].Published})
	}
	if !found && len(ds) == 0 {
		return fmt.Errorf("event %s: %w", id, registry.ErrNotFound)
	}
	view := eventView{ID: id, Deliveries: make([]deliveryView, 0, len(ds))}
	seen := make(map[string]bool, len(ds))
	for _, d := range ds {
		seen[d.WebhookID] = true
		view.Deliveries = append(view.Deliveries, deliveryViewOf(d))
		view.EventType, view.PublishedAt = d.EventType, rfc3339(d.Published)
	}
	if found {
		view.EventType, view.WorkflowID, view.PublishedAt, view.InStream = string(ev.Type), ev.WorkflowID, rfc3339(ev.Timestamp), true
		for _, wh := range s.store.Index().Match(ws, ev.Type, ev.WorkflowID, nil) {
			if seen[wh.ID] || wh.CreatedAt.After(ev.Timestamp) {
				continue
			}
			view.Deliveries = append(view.Deliveries, deliveryView{ID: events.DeliveryID(id, wh.ID), WebhookID: wh.ID,
				EventID: id, EventType: string(ev.Type), State: string(deliverylog.Pending), Attempts: []attemptView{}})
		}
	}
	writeSuccess(w, view, "")
	return nil
}

type eventView struct {
	ID          string `json:"id"`
	EventType   string `json:"eventType,omitempty"`
	WorkflowID  string `json:"workflowId,omitempty"`
	PublishedAt string `json:"publishedAt,omitempty"`
	// InStream: the events stream still holds the event, so its
	// deliveries can be retried or replayed.
	InStream   bool           `json:"inStream"`
	Deliveries []deliveryView `json:"deliveries"`
}

type deliveryView struct {
	ID             string        `json:"id"`
	WebhookID      string        `json:"webhookId"`
	EventID        string        `json:"eventId"`
	EventType      string        `json:"eventType"`
	State          string        `json:"state"`
	Reason         string        `json:"reason,omitempty"`
	NextAttemptAt  string        `json:"nextAttemptAt,omitempty"`
	FirstAttemptAt string        `json:"firstAttemptAt,omitempty"`
	LastAttemptAt  string        `json:"lastAttemptAt,omitempty"`
	Attempts       []attemptView `json:"attempts"`
}

type attemptView struct {
	Attempt    int     `json:"attempt"`
	At         string  `json:"at"`
	DurationMs float64 `json:"durationMs"`
	Status     int     `json:"status,omitempty"`
	ErrorClass string  `json:"errorClass,omitempty"`
	Error      string  `json:"error,omitempty"`
	Response   string  `json:"response,omitempty"`
	State      string  `json:"state"`
	Trigger    string  `json:"trigger,omitempty"`
}

func deliveryViewOf(d deliverylog.Delivery) deliveryView {
	v := deliveryView{
		ID: d.ID, WebhookID: d.WebhookID, EventID: d.EventID, EventType: d.EventType, State: string(d.State),
		Reason: d.Reason, NextAttemptAt: rfc3339(d.NextAttemptAt), FirstAttemptAt: rfc3339(d.FirstAttemptAt),
		LastAttemptAt: rfc3339(d.LastAttemptAt), Attempts: make([]attemptView, len(d.Attempts)),
	}
	for i, a := range d.Attempts {
		v.Attempts[i] = attemptView{Attempt: a.Attempt, At: rfc3339(a.At), DurationMs: float64(a.Duration.Microseconds()) / 1000,
			Status: a.Status, ErrorClass: a.ErrorClass, Error: a.Error, Response: a.Response, State: string(a.State),
			Trigger: a.Trigger}
	}
	return v
}

func rfc3339(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}
