// Package console serves webhookd's web console: a few static files
// (HTML, CSS and one script) embedded in the binary, that sign in with a
// workspace API key and use the same management API as curl does. The key
// lives in the tab's sessionStorage and travels in the x-copy-ai-api-key
// header, never in a cookie, so no other site can make the browser use it
// (there is nothing for a cross-site request to carry).
//
// Every answer carries a strict Content-Security-Policy: scripts and
// styles only from this origin (no inline script or style), API calls only
// to this origin, no framing. The script builds the page with textContent
// and DOM calls only, so what a user or a receiver supplied (URLs,
// response snippets) is always shown as text.
package console

import (
	"bytes"
	"embed"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed static
var static embed.FS

// Policy is the Content-Security-Policy of every console answer.
const Policy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// Handler serves the console: GET / is the page, /console/<file> its
// assets. Unknown files are 404; nothing but GET and HEAD is served.
func Handler() http.Handler {
	files, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embed above guarantees the directory
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", Policy)
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		name := strings.TrimPrefix(r.URL.Path, "/console/")
		if r.URL.Path == "/" {
			name = "index.html"
		}
		if name == "" || strings.Contains(name, "/") || path.Clean(name) != name {
			http.NotFound(w, r)
			return
		}
		// Served as content rather than through a file server, which
		// would redirect /index.html to / and list directories.
		data, err := fs.ReadFile(files, name)
		if err != nil {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(data))
	})
}
