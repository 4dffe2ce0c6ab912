package console

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHandler(t *testing.T) {
	h := Handler()
	for _, tc := range []struct {
		method, path string
		status       int
		ctype, has   string
	}{
		{"GET", "/", 200, "text/html", `<script src="/console/app.js" defer></script>`},
		{"HEAD", "/", 200, "text/html", ""},
		{"GET", "/console/app.js", 200, "text/javascript", "textContent"},
		{"GET", "/console/app.css", 200, "text/css", ":root"},
		{"GET", "/console/index.html", 200, "text/html", "<title>webhookd console</title>"},
		{"GET", "/console/", 404, "", ""},
		{"GET", "/console/nope.js", 404, "", ""},
		{"GET", "/console/../console.go", 404, "", ""},
		{"GET", "/console/static/app.js", 404, "", ""},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, nil))
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d", rec.Code, tc.status)
			}
			hdr := rec.Header()
			if hdr.Get("Content-Security-Policy") != Policy || hdr.Get("X-Frame-Options") != "DENY" || hdr.Get("X-Content-Type-Options") != "nosniff" {
				t.Errorf("security headers: %v", hdr)
			}
			if tc.status != 200 {
				return
			}
			if !strings.HasPrefix(hdr.Get("Content-Type"), tc.ctype) {
				t.Errorf("Content-Type %q, want %s", hdr.Get("Content-Type"), tc.ctype)
			}
			body, _ := io.ReadAll(rec.Body)
			if !strings.Contains(string(body), tc.has) {
				t.Errorf("body lacks %q", tc.has)
			}
		})
	}
}

// TestNoInlineScriptOrStyle: the policy allows no inline script or style,
// so the page must hold none (it would silently not run).
func TestNoInlineScriptOrStyle(t *testing.T) {
	page, err := static.ReadFile("static/index.html")
	if err != nil {
		t.Fatal(err)
	}
	s := string(page)
	if strings.Count(s, "<script") != 1 || !strings.Contains(s, `<script src="/console/app.js"`) {
		t.Error("the page has a script other than /console/app.js")
	}
	for _, bad := range []string{"<style", " style=", " onclick=", " onload=", " onsubmit=", "javascript:"} {
		if strings.Contains(s, bad) {
			t.Errorf("the page holds %q, which the policy blocks", bad)
		}
	}
	js, _ := static.ReadFile("static/app.js")
	if strings.Contains(string(js), ".innerHTML") || strings.Contains(string(js), ".outerHTML") || strings.Contains(string(js), "insertAdjacentHTML(") || strings.Contains(string(js), "document.write") {
		t.Error("app.js writes HTML; it must build the page with DOM calls and textContent")
	}
}
