package api

import (
	"context"
	"net/http"
	"strconv"
	"time"
)

// apiKeyHeader carries the caller's key, named after copy.ai's API.
const apiKeyHeader = "x-copy-ai-api-key"

type workspaceKey struct{}

// workspaceFrom returns the workspace the authenticated caller belongs to.
func workspaceFrom(ctx context.Context) string {
	ws, _ := ctx.Value(workspaceKey{}).(string)
	return ws
}

// authed wraps next so that it runs only for a caller with a valid key, with
// the key's workspace in the request context.
//
// The key is checked first: a valid key is always served, whatever failures
// others behind the same address (a load balancer, a NAT) have piled up.
// Only a failed attempt consults the limiter, which answers 429 once that
// client has spent its failure budget for this key or for all keys.
func (s *Server) authed(next handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		key := r.Header.Get(apiKeyHeader)
		if key != "" {
			if ws, ok := s.keys.Resolve(key); ok {
				return next(w, r.WithContext(context.WithValue(r.Context(), workspaceKey{}, ws)))
			}
		}
		client := s.clients.client(r)
		if wait, limited := s.limiter.fail(client, keyID(key), time.Now()); limited {
			secs := int64(wait / time.Second)
			w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
			s.metrics.authRateLimited()
			s.log.DebugContext(r.Context(), "auth rate limited",
				"request_id", requestID(r.Context()), "client", client.String())
			return &apiError{Status: http.StatusTooManyRequests, Code: codeRateLimited,
				Details: map[string]any{"retryAfterSeconds": secs}}
		}
		s.metrics.authFailure()
		reason := "invalid API key"
		if key == "" {
			reason = "missing API key header " + apiKeyHeader
		}
		s.log.InfoContext(r.Context(), "auth failed",
			"request_id", requestID(r.Context()), "client", client.String(), "key_present", key != "")
		return &apiError{Status: http.StatusUnauthorized, Code: codeUnauthorized,
			Details: map[string]any{"reason": reason}}
	}
}
