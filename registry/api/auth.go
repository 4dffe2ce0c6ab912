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
func (s *Server) authed(next handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		client := clientKey(r.RemoteAddr)
		now := time.Now()
		// A client that has used up its failure budget is refused before the
		// key is looked at, so guessing stays throttled even for a right guess.
		if wait, limited := s.limiter.blocked(client, now); limited {
			secs := int64(wait / time.Second)
			w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
			s.log.DebugContext(r.Context(), "auth rate limited",
				"request_id", requestID(r.Context()), "client", client.String())
			return &apiError{Status: http.StatusTooManyRequests, Code: codeRateLimited,
				Details: map[string]any{"retryAfterSeconds": secs}}
		}

		key := r.Header.Get(apiKeyHeader)
		ws, ok := "", false
		if key != "" {
			ws, ok = s.keys.Lookup(key)
		}
		if !ok {
			s.limiter.fail(client, now)
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
		return next(w, r.WithContext(context.WithValue(r.Context(), workspaceKey{}, ws)))
	}
}
