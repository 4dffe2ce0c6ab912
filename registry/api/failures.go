package api

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/webhookd/webhookd/registry"
)

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
	fs, err := s.store.Failures(r.Context(), workspaceFrom(r.Context()), id, limit)
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
	f, err := s.store.Failure(r.Context(), ws, hookID, failureID)
	if err != nil {
		return fmt.Errorf("get failure %s of webhook %s: %w", failureID, hookID, err)
	}
	if err := s.redeliver.Redeliver(r.Context(), f); err != nil {
		return fmt.Errorf("redeliver failure %s of webhook %s: %w", failureID, hookID, err)
	}
	// A concurrent retry of the same record may have removed it already; the
	// redelivery happened either way (receivers dedupe on webhook-id).
	if err := s.store.DeleteFailure(r.Context(), ws, hookID, failureID); err != nil && !errors.Is(err, registry.ErrNotFound) {
		return fmt.Errorf("delete failure %s of webhook %s after redelivery: %w", failureID, hookID, err)
	}
	s.log.InfoContext(r.Context(), "failure redelivered",
		"request_id", requestID(r.Context()), "workspace", ws, "webhook_id", hookID, "failure_id", failureID)
	writeSuccess(w, map[string]any{"redelivered": true}, "")
	return nil
}
