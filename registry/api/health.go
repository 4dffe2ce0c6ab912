package api

import "net/http"

// healthz answers whenever the process can serve HTTP at all.
func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) error {
	writeSuccess(w, map[string]bool{"alive": true}, "")
	return nil
}

// readyz reports Config.Ready; load balancers and the DESIGN's "ready means
// events are captured" promise hang on it.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) error {
	if s.ready != nil {
		if err := s.ready(); err != nil {
			s.log.DebugContext(r.Context(), "not ready", "request_id", requestID(r.Context()), "err", err)
			return &apiError{Status: http.StatusServiceUnavailable, Code: codeNotReady,
				Details: map[string]any{"reason": err.Error()}}
		}
	}
	body := map[string]any{"ready": true}
	if s.warnings != nil {
		if ws := s.warnings(); len(ws) > 0 {
			body["warnings"] = ws
		}
	}
	writeSuccess(w, body, "")
	return nil
}

func (s *Server) serveMetrics(w http.ResponseWriter, r *http.Request) error {
	if s.metricsHandler == nil {
		return &apiError{Status: http.StatusNotFound, Code: codeNotFound,
			Details: map[string]any{"reason": "metrics are not enabled"}}
	}
	s.metricsHandler.ServeHTTP(w, r)
	return nil
}
