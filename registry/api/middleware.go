package api

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"runtime/debug"
	"strings"
	"time"
)

const requestIDHeader = "X-Request-Id"

type requestIDKey struct{}

func requestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// acceptRequestID keeps a caller-supplied id only if it is short and plain,
// so it can neither bloat nor forge log lines.
func acceptRequestID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.'
		if !ok {
			return false
		}
	}
	return true
}

// recorder remembers the status written through it, for metrics, logging,
// and to know whether a recovered panic can still send an error envelope.
type recorder struct {
	http.ResponseWriter
	status int
}

func (rec *recorder) WriteHeader(code int) {
	if rec.status == 0 && code >= 200 {
		rec.status = code
	}
	rec.ResponseWriter.WriteHeader(code)
}

func (rec *recorder) Write(b []byte) (int, error) {
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	return rec.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the real writer.
func (rec *recorder) Unwrap() http.ResponseWriter { return rec.ResponseWriter }

// observe assigns the request id, counts the response and logs the request.
// Only the path is logged, never the query string (cursors, and whatever
// else a client may put there).
func (s *Server) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := r.Header.Get(requestIDHeader)
		if !acceptRequestID(id) {
			id = rand.Text()
		}
		w.Header().Set(requestIDHeader, id)
		r = r.WithContext(context.WithValue(r.Context(), requestIDKey{}, id))
		rec := &recorder{ResponseWriter: w}
		defer func() {
			// Runs even when a panic is on its way out (http.ErrAbortHandler).
			status := rec.status
			if status == 0 {
				status = http.StatusOK
			}
			s.metrics.request(status)
			s.log.DebugContext(r.Context(), "request",
				"request_id", id, "method", r.Method, "route", r.Pattern, "path", r.URL.Path,
				"status", status, "duration", time.Since(start))
		}()
		next.ServeHTTP(rec, r)
	})
}

// recoverPanics turns a handler panic into a logged 500 envelope. It expects to
// wrap a *recorder (observe does that).
func (s *Server) recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			p := recover()
			if p == nil {
				return
			}
			if p == http.ErrAbortHandler { //nolint:errorlint // sentinel compared by identity, as net/http does
				panic(p)
			}
			s.log.ErrorContext(r.Context(), "handler panic",
				"request_id", requestID(r.Context()), "method", r.Method, "route", r.Pattern,
				"panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			if rec, ok := w.(*recorder); ok && rec.status != 0 {
				// Part of a response is already out; the only honest signal
				// left is to break the connection.
				panic(http.ErrAbortHandler)
			}
			writeEnvelope(w, http.StatusInternalServerError, errorEnvelope{Status: "error", ErrorCode: codeInternal})
		}()
		next.ServeHTTP(w, r)
	})
}

// route dispatches through the mux, but answers unknown paths and wrong
// methods itself so they carry the JSON envelope instead of the mux's text.
func (s *Server) route(w http.ResponseWriter, r *http.Request) {
	h, pattern := s.mux.Handler(r)
	if pattern != "" {
		s.mux.ServeHTTP(w, r)
		return
	}
	// The web console is no part of the API (nor of its OpenAPI
	// document): static pages that call the API like any client.
	if s.console != nil && (r.Method == http.MethodGet || r.Method == http.MethodHead) &&
		(r.URL.Path == "/" || strings.HasPrefix(r.URL.Path, "/console/")) {
		s.console.ServeHTTP(w, r)
		return
	}
	// The mux's fallback is either its 405 handler (which knows the Allow
	// list) or a 404/redirect; run it against a scratch writer to learn which.
	probe := &fallbackProbe{header: make(http.Header)}
	h.ServeHTTP(probe, r)
	if probe.status == http.StatusMethodNotAllowed {
		allow := probe.header.Get("Allow")
		w.Header().Set("Allow", allow)
		writeEnvelope(w, http.StatusMethodNotAllowed, errorEnvelope{Status: "error", ErrorCode: codeMethodNotAllowed,
			Details: map[string]any{"allow": allow}})
		return
	}
	writeEnvelope(w, http.StatusNotFound, errorEnvelope{Status: "error", ErrorCode: codeNotFound})
}

// fallbackProbe is a ResponseWriter that only records the status and headers.
type fallbackProbe struct {
	header http.Header
	status int
}

func (p *fallbackProbe) Header() http.Header         { return p.header }
func (p *fallbackProbe) Write(b []byte) (int, error) { return len(b), nil }
func (p *fallbackProbe) WriteHeader(code int) {
	if p.status == 0 {
		p.status = code
	}
}
