package api

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/webhookd/webhookd/registry"
)

// webhookView is a subscription on the wire. workflowId is always present,
// "" meaning every workflow.
type webhookView struct {
	ID         string `json:"id"`
	URL        string `json:"url"`
	EventType  string `json:"eventType"`
	WorkflowID string `json:"workflowId"`
	Secret     string `json:"secret"`
	CreatedAt  string `json:"createdAt"`
}

func viewOf(w registry.Webhook) webhookView {
	return webhookView{
		ID:         w.ID,
		URL:        w.URL,
		EventType:  string(w.EventType),
		WorkflowID: w.WorkflowID,
		Secret:     w.Secret,
		CreatedAt:  w.CreatedAt.UTC().Format(time.RFC3339),
	}
}

func (s *Server) createWebhook(w http.ResponseWriter, r *http.Request) error {
	body, err := checkJSONBody(w, r, s.maxBodyBytes)
	if err != nil {
		return err
	}
	in, err := decodeCreate(body)
	if err != nil {
		var ae *apiError
		if !errors.As(err, &ae) || ae.Code != codeValidationFailed {
			return err
		}
		// Wrong JSON types were found; validate the other fields too so the
		// client learns about every bad field in one round trip.
		return mergeValidation(ae, s.validator.Validate(in))
	}
	if err := s.validator.Validate(in); err != nil {
		return err
	}
	ws := workspaceFrom(r.Context())
	hook, err := registry.New(ws, in, time.Now())
	if err != nil {
		return fmt.Errorf("new webhook: %w", err)
	}
	if err := s.store.Create(r.Context(), hook); err != nil {
		return fmt.Errorf("create webhook %s: %w", hook.ID, err)
	}
	s.log.InfoContext(r.Context(), "webhook created",
		"request_id", requestID(r.Context()), "workspace", ws, "webhook_id", hook.ID, "event_type", string(hook.EventType))
	writeSuccess(w, viewOf(hook), "")
	return nil
}

// mergeValidation adds the validator's findings to a type-error 422 without
// overwriting it: a field of the wrong type was decoded as "", which the
// validator would misreport as missing.
func mergeValidation(typeErr *apiError, verr error) error {
	if verr == nil {
		return typeErr
	}
	var ve *registry.ValidationError
	if !errors.As(verr, &ve) {
		return verr
	}
	for field, msg := range ve.Fields {
		if _, taken := typeErr.Details[field]; !taken {
			typeErr.Details[field] = msg
		}
	}
	return typeErr
}

func (s *Server) listWebhooks(w http.ResponseWriter, r *http.Request) error {
	limit, err := parseLimit(r, defaultListLimit)
	if err != nil {
		return err
	}
	hooks, next, err := s.store.List(r.Context(), workspaceFrom(r.Context()), r.URL.Query().Get("cursor"), limit)
	if err != nil {
		return fmt.Errorf("list webhooks: %w", err)
	}
	views := make([]webhookView, len(hooks)) // never null on the wire
	for i, h := range hooks {
		views[i] = viewOf(h)
	}
	writeSuccess(w, views, next)
	return nil
}

func (s *Server) getWebhook(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	hook, err := s.store.Get(r.Context(), workspaceFrom(r.Context()), id)
	if err != nil {
		return fmt.Errorf("get webhook %s: %w", id, err)
	}
	writeSuccess(w, viewOf(hook), "")
	return nil
}

func (s *Server) deleteWebhook(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	ws := workspaceFrom(r.Context())
	if err := s.store.Delete(r.Context(), ws, id); err != nil {
		return fmt.Errorf("delete webhook %s: %w", id, err)
	}
	s.log.InfoContext(r.Context(), "webhook deleted",
		"request_id", requestID(r.Context()), "workspace", ws, "webhook_id", id)
	writeSuccess(w, map[string]any{"id": id, "deleted": true}, "")
	return nil
}
