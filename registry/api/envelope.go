package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/webhookd/webhookd/registry"
)

// Stable error codes; the package doc lists them with their statuses.
const (
	codeUnauthorized          = "UNAUTHORIZED"
	codeRateLimited           = "RATE_LIMITED"
	codeInvalidJSON           = "INVALID_JSON"
	codeUnsupportedMediaType  = "UNSUPPORTED_MEDIA_TYPE"
	codeInvalidCursor         = "INVALID_CURSOR"
	codeInvalidLimit          = "INVALID_LIMIT"
	codeValidationFailed      = "VALIDATION_FAILED"
	codeNotFound              = "NOT_FOUND"
	codeMethodNotAllowed      = "METHOD_NOT_ALLOWED"
	codeBodyTooLarge          = "BODY_TOO_LARGE"
	codeNotReady              = "NOT_READY"
	codeInternal              = "INTERNAL"
	codeRedeliveryUnavailable = "REDELIVERY_UNAVAILABLE"
	codeRegistryUnavailable   = "REGISTRY_UNAVAILABLE"
	codeUnknownField          = "UNKNOWN_FIELD"
	codeInvalidIdempotencyKey = "INVALID_IDEMPOTENCY_KEY"
	codeEventsUnavailable     = "EVENTS_UNAVAILABLE"
	codeTestUnavailable       = "TEST_UNAVAILABLE"
	codeDeliveriesUnavailable = "DELIVERIES_UNAVAILABLE"
	codeEventExpired          = "EVENT_EXPIRED"
	codeReplayUnavailable     = "REPLAY_UNAVAILABLE"
	codeStoreFull             = "STORE_FULL"
)

// retryLater is an error of a dependency that is refusing work for a
// while, not failing (the dispatcher's ErrDeliveriesFull): a 503 with
// Retry-After, logged as nothing unexpected.
type retryLater interface {
	error
	RetryAfter() time.Duration
}

// apiError is an error that already knows how it looks on the wire. Handlers
// return it for client mistakes; everything else goes through toAPIError.
type apiError struct {
	Status  int
	Code    string
	Details map[string]any
	// RetryAfter, when positive, is sent as the Retry-After header.
	RetryAfter time.Duration
}

func (e *apiError) Error() string {
	if r, ok := e.Details["reason"]; ok {
		return fmt.Sprintf("api: %d %s: %v", e.Status, e.Code, r)
	}
	return fmt.Sprintf("api: %d %s", e.Status, e.Code)
}

// handlerFunc is the shape of every route handler: it either writes a success
// response and returns nil, or writes nothing and returns the error, which
// the adapter turns into the error envelope. Keeping the error path in one
// place is what makes "every error uses the envelope" hold.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

type successEnvelope struct {
	Status     string `json:"status"`
	Data       any    `json:"data"`
	NextCursor string `json:"nextCursor,omitempty"`
}

type errorEnvelope struct {
	Status    string         `json:"status"`
	ErrorCode string         `json:"errorCode"`
	Details   map[string]any `json:"details,omitempty"`
}

// adapt turns a handlerFunc into an http.Handler with the shared error path.
func (s *Server) adapt(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			s.writeError(w, r, err)
		}
	})
}

// toAPIError maps an error to its wire form. The bool reports whether the
// error was unexpected (a 500 whose cause must be logged, not shown).
func toAPIError(err error) (*apiError, bool) {
	var ae *apiError
	var ve *registry.ValidationError
	var busy retryLater
	switch {
	case errors.As(err, &ae):
		return ae, false
	case errors.As(err, &busy):
		return &apiError{Status: http.StatusServiceUnavailable, Code: codeStoreFull, RetryAfter: busy.RetryAfter(),
			Details: map[string]any{"reason": busy.Error()}}, false
	case errors.As(err, &ve):
		return validationError(ve.Fields), false
	case errors.Is(err, registry.ErrNotFound):
		return &apiError{Status: http.StatusNotFound, Code: codeNotFound}, false
	case errors.Is(err, registry.ErrUnavailable):
		return &apiError{Status: http.StatusServiceUnavailable, Code: codeRegistryUnavailable,
			Details: map[string]any{"reason": "the shared registry (NATS) is unreachable; nothing was changed, retry later"}}, true
	case errors.Is(err, registry.ErrEmptyPatch):
		return validationError(map[string]string{"body": "must set at least one of " + patchableList}), false
	case errors.Is(err, errEventsUnavailable):
		return eventsUnavailable(err), true
	case errors.Is(err, registry.ErrBadCursor):
		return &apiError{Status: http.StatusBadRequest, Code: codeInvalidCursor,
			Details: map[string]any{"reason": "cursor is malformed or was not issued by this server"}}, false
	}
	return &apiError{Status: http.StatusInternalServerError, Code: codeInternal}, true
}

func validationError(fields map[string]string) *apiError {
	d := make(map[string]any, len(fields))
	for k, v := range fields {
		d[k] = v
	}
	return &apiError{Status: http.StatusUnprocessableEntity, Code: codeValidationFailed, Details: d}
}

func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	ae, unexpected := toAPIError(err)
	if unexpected {
		s.log.ErrorContext(r.Context(), "request failed",
			"request_id", requestID(r.Context()), "method", r.Method, "route", r.Pattern, "err", err)
	}
	if ae.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.FormatInt(int64((ae.RetryAfter+time.Second-1)/time.Second), 10))
	}
	writeEnvelope(w, ae.Status, errorEnvelope{Status: "error", ErrorCode: ae.Code, Details: ae.Details})
}

// writeSuccess writes a 200 success envelope; nextCursor "" is omitted.
func writeSuccess(w http.ResponseWriter, data any, nextCursor string) {
	writeEnvelope(w, http.StatusOK, successEnvelope{Status: "success", Data: data, NextCursor: nextCursor})
}

// writeAccepted writes a 202 success envelope: the request is taken, its
// effect (such as deliveries) follows.
func writeAccepted(w http.ResponseWriter, data any) {
	writeEnvelope(w, http.StatusAccepted, successEnvelope{Status: "success", Data: data})
}

func writeEnvelope(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		// Only our own fixed types reach here, so this is a programming error;
		// still answer with a well-formed envelope rather than nothing.
		status = http.StatusInternalServerError
		body = []byte(`{"status":"error","errorCode":"` + codeInternal + `"}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Del("Content-Length")
	w.WriteHeader(status)
	body = append(body, '\n')
	// A failed write means the client went away; there is nobody to tell.
	_, _ = w.Write(body)
}
