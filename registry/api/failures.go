package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/webhookd/webhookd/registry"
)

// FailureStore holds the records of deliveries that ran out of retries,
// addressed by webhook alone: the handlers check first, with Store.Get,
// that the webhook belongs to the caller's workspace. failurelog.Log
// satisfies it. Failures may leave Body empty (lists do not show it);
// Failure must return it, and a record whose body was not kept cannot
// be retried. Missing records are errors wrapping registry.ErrNotFound;
// a store that cannot answer now wraps registry.ErrUnavailable.
type FailureStore interface {
	Failures(ctx context.Context, webhookID string, limit int) ([]registry.Failure, error)
	Failure(ctx context.Context, webhookID, failureID string) (registry.Failure, error)
	DeleteFailure(ctx context.Context, webhookID, failureID string) error
}

// failureForgetter is a FailureStore that must be told when a webhook is
// deleted (the local Store deletes a webhook's records with it).
type failureForgetter interface {
	Forget(ctx context.Context, webhookID string) error
}

// localFailures is the FailureStore of a single instance: the records in
// the Store's own bbolt file. Those are addressed by workspace too, which
// the index gives.
type localFailures struct{ store *registry.Store }

func (l localFailures) workspace(webhookID string) (string, error) {
	w, ok := l.store.Index().Get(webhookID)
	if !ok {
		return "", fmt.Errorf("webhook %s: %w", webhookID, registry.ErrNotFound)
	}
	return w.Workspace, nil
}

func (l localFailures) Failures(ctx context.Context, webhookID string, limit int) ([]registry.Failure, error) {
	ws, err := l.workspace(webhookID)
	if err != nil {
		return nil, err
	}
	return l.store.Failures(ctx, ws, webhookID, limit)
}

func (l localFailures) Failure(ctx context.Context, webhookID, failureID string) (registry.Failure, error) {
	ws, err := l.workspace(webhookID)
	if err != nil {
		return registry.Failure{}, err
	}
	return l.store.Failure(ctx, ws, webhookID, failureID)
}

func (l localFailures) DeleteFailure(ctx context.Context, webhookID, failureID string) error {
	ws, err := l.workspace(webhookID)
	if err != nil {
		return err
	}
	return l.store.DeleteFailure(ctx, ws, webhookID, failureID)
}

// failureView is a recorded failed delivery on the wire. The event body is
// left out: it can be large, and retry does not need the client to send it.
type failureView struct {
	ID             string `json:"id"`
	WebhookID      string `json:"webhookId"`
	EventID        string `json:"eventId"`
	EventType      string `json:"eventType"`
	Subject        string `json:"subject"`
	Attempts       int    `json:"attempts"`
	LastStatus     int    `json:"lastStatus"` // 0: transport error, see lastError
	LastError      string `json:"lastError,omitempty"`
	Reason         string `json:"reason"`
	FirstAttemptAt string `json:"firstAttemptAt"`
	LastAttemptAt  string `json:"lastAttemptAt"`
}

func failureViewOf(f registry.Failure) failureView {
	return failureView{
		ID:             f.ID,
		WebhookID:      f.WebhookID,
		EventID:        f.EventID,
		EventType:      string(f.EventType),
		Subject:        f.Subject,
		Attempts:       f.Attempts,
		LastStatus:     f.LastStatus,
		LastError:      f.LastError,
		Reason:         f.Reason,
		FirstAttemptAt: f.FirstAttemptAt.UTC().Format(time.RFC3339),
		LastAttemptAt:  f.LastAttemptAt.UTC().Format(time.RFC3339),
	}
}

func (s *Server) listFailures(w http.ResponseWriter, r *http.Request) error {
	limit, err := parseLimit(r, defaultListLimit)
	if err != nil {
		return err
	}
	id := r.PathValue("id")
	if _, err := s.store.Get(r.Context(), workspaceFrom(r.Context()), id); err != nil {
		return fmt.Errorf("list failures of webhook %s: %w", id, err)
	}
	fs, err := s.failures.Failures(r.Context(), id, limit)
	if err != nil {
		return fmt.Errorf("list failures of webhook %s: %w", id, err)
	}
	views := make([]failureView, len(fs))
	for i, f := range fs {
		views[i] = failureViewOf(f)
	}
	writeSuccess(w, views, "")
	return nil
}

// retryFailure redelivers one recorded failure and, once the Redeliverer has
// taken it, forgets the record. The route takes no body.
func (s *Server) retryFailure(w http.ResponseWriter, r *http.Request) error {
	if s.redeliver == nil {
		return &apiError{Status: http.StatusNotImplemented, Code: codeRedeliveryUnavailable,
			Details: map[string]any{"reason": "this server cannot redeliver"}}
	}
	ws := workspaceFrom(r.Context())
	hookID, failureID := r.PathValue("id"), r.PathValue("failureId")
	if _, err := s.store.Get(r.Context(), ws, hookID); err != nil {
		return fmt.Errorf("get failure %s of webhook %s: %w", failureID, hookID, err)
	}
	f, err := s.failures.Failure(r.Context(), hookID, failureID)
	if err != nil {
		return fmt.Errorf("get failure %s of webhook %s: %w", failureID, hookID, err)
	}
	if len(f.Body) == 0 {
		// The log kept the record but not its too-large event body:
		// redelivering would send an empty body under a valid signature.
		return &apiError{Status: http.StatusConflict, Code: codeRedeliveryUnavailable,
			Details: map[string]any{"reason": "the event body of this failure was too large to keep; it cannot be retried"}}
	}
	// The workspace is the caller's, checked above; the record's own
	// copy is not trusted with routing the redelivery.
	f.Workspace = ws
	if err := s.redeliver.Redeliver(r.Context(), f); err != nil {
		return fmt.Errorf("redeliver failure %s of webhook %s: %w", failureID, hookID, err)
	}
	// A concurrent retry of the same record may have removed it already; the
	// redelivery happened either way (receivers dedupe on webhook-id).
	if err := s.failures.DeleteFailure(r.Context(), hookID, failureID); err != nil && !errors.Is(err, registry.ErrNotFound) {
		return fmt.Errorf("delete failure %s of webhook %s after redelivery: %w", failureID, hookID, err)
	}
	s.log.InfoContext(r.Context(), "failure redelivered",
		"request_id", requestID(r.Context()), "workspace", ws, "webhook_id", hookID, "failure_id", failureID)
	writeSuccess(w, map[string]any{"redelivered": true}, "")
	return nil
}
