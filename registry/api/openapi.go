package api

import (
	_ "embed"
	"net/http"
)

// openAPIDocument describes every route of routeTable (OpenAPI 3.1). A
// test validates it against the OpenAPI 3.1 schema, checks that it lists
// exactly the registered routes, and checks real answers against it.
//
//go:embed openapi.yaml
var openAPIDocument []byte

// serveOpenAPI serves the document, unauthenticated: it describes the
// API, not any workspace's data.
func (s *Server) serveOpenAPI(w http.ResponseWriter, _ *http.Request) error {
	h := w.Header()
	h.Set("Content-Type", "application/yaml")
	h.Set("Cache-Control", "public, max-age=300")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	// A failed write means the client went away; there is nobody to tell.
	_, _ = w.Write(openAPIDocument)
	return nil
}
