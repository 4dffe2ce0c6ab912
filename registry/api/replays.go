package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/webhookd/webhookd/registry/replay"
)

// Replayer runs replay jobs (replay.Manager): re-delivery of the events
// still in the events stream that match one webhook within a time window.
type Replayer interface {
	Start(ctx context.Context, r replay.Request) (replay.Job, error)
	Get(ctx context.Context, workspace, id string) (replay.Job, error)
	Cancel(ctx context.Context, workspace, id string) (replay.Job, error)
}

// replayFields are the JSON names a replay body may hold.
var replayFields = []string{"since", "until", "status"}

func (s *Server) replayer() (Replayer, error) {
	if s.replays == nil {
		return nil, &apiError{Status: http.StatusNotImplemented, Code: codeReplayUnavailable,
			Details: map[string]any{"reason": "this server runs no replays"}}
	}
	return s.replays, nil
}

// startReplay: POST /api/webhook/{id}/replay {"since","until"?,"status"?}.
// until defaults to now, status to "all". The job runs in the background;
// the answer is 202 with it, to follow at GET /api/replays/{id}.
func (s *Server) startReplay(w http.ResponseWriter, r *http.Request) error {
	rp, err := s.replayer()
	if err != nil {
		return err
	}
	raw, err := readJSONBody(w, r, s.maxBodyBytes)
	if err != nil {
		return err
	}
	req, err := decodeReplay(raw, time.Now())
	if err != nil {
		return err
	}
	req.Workspace, req.WebhookID = workspaceFrom(r.Context()), r.PathValue("id")
	if _, err := s.store.Get(r.Context(), req.Workspace, req.WebhookID); err != nil {
		return fmt.Errorf("replay webhook %s: %w", req.WebhookID, err)
	}
	job, err := rp.Start(r.Context(), req)
	if err != nil {
		return replayError(err, "start a replay of webhook "+req.WebhookID)
	}
	s.log.InfoContext(r.Context(), "replay started", "request_id", requestID(r.Context()), "workspace", req.Workspace,
		"webhook_id", req.WebhookID, "replay_id", job.ID, "since", req.Since, "until", req.Until, "replay_status", req.Status)
	writeAccepted(w, job)
	return nil
}

// decodeReplay parses a replay body. Errors are *apiErrors: 400
// INVALID_JSON or UNKNOWN_FIELD, 422 VALIDATION_FAILED naming the fields.
func decodeReplay(raw []byte, now time.Time) (replay.Request, error) {
	obj, err := decodeObject(bytes.NewReader(raw))
	if err != nil {
		return replay.Request{}, err
	}
	if ae := unknownFields(obj, replayFields, "is not a field of a replay; known: since, until, status"); ae != nil {
		return replay.Request{}, ae
	}
	bad := map[string]string{}
	var req replay.Request
	times := map[string]*time.Time{"since": &req.Since, "until": &req.Until}
	for name, dst := range times {
		v, ok := obj[name]
		if !ok || bytes.Equal(v, []byte("null")) {
			continue
		}
		var s string
		t, err := time.Time{}, json.Unmarshal(v, &s)
		if err == nil {
			t, err = time.Parse(time.RFC3339, s)
		}
		if err != nil {
			bad[name] = "must be an RFC 3339 time, e.g. 2026-12-01T10:00:00Z"
			continue
		}
		*dst = t
	}
	if _, ok := obj["since"]; !ok {
		bad["since"] = "is required"
	}
	if req.Until.IsZero() {
		req.Until = now
	}
	if v, ok := obj["status"]; ok && !bytes.Equal(v, []byte("null")) {
		if err := json.Unmarshal(v, &req.Status); err != nil || (req.Status != replay.StatusAll && req.Status != replay.StatusFailed) {
			bad["status"] = `must be "all" or "failed"`
		}
	}
	if len(bad) > 0 {
		return req, validationError(bad)
	}
	return req, nil
}

// getReplay: GET /api/replays/{id}.
func (s *Server) getReplay(w http.ResponseWriter, r *http.Request) error {
	rp, err := s.replayer()
	if err != nil {
		return err
	}
	job, err := rp.Get(r.Context(), workspaceFrom(r.Context()), r.PathValue("id"))
	if err != nil {
		return replayError(err, "get replay "+r.PathValue("id"))
	}
	writeSuccess(w, job, "")
	return nil
}

// cancelReplay: DELETE /api/replays/{id} stops a queued or running job;
// deliveries it queued already go ahead.
func (s *Server) cancelReplay(w http.ResponseWriter, r *http.Request) error {
	rp, err := s.replayer()
	if err != nil {
		return err
	}
	job, err := rp.Cancel(r.Context(), workspaceFrom(r.Context()), r.PathValue("id"))
	if err != nil {
		return replayError(err, "cancel replay "+r.PathValue("id"))
	}
	writeSuccess(w, job, "")
	return nil
}

func replayError(err error, what string) error {
	var fe *replay.FieldError
	switch {
	case errors.As(err, &fe):
		return validationError(fe.Fields)
	case errors.Is(err, replay.ErrTooMany):
		return &apiError{Status: http.StatusTooManyRequests, Code: codeRateLimited,
			Details: map[string]any{"reason": "this workspace has as many unfinished replays as it may; wait for one to finish"}}
	}
	return fmt.Errorf("%s: %w", what, err)
}
