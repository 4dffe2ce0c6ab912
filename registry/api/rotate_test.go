package api

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestRotateSecret: the rotate-secret answers, and what GET …/secret shows
// afterwards.
func TestRotateSecret(t *testing.T) {
	cases := []struct {
		name, ctype, body string
		status            int
		code              string // error code, for a non-200
		wantGrace         time.Duration
	}{
		{name: "no body: 24h", status: 200, wantGrace: 24 * time.Hour},
		{name: "empty object: 24h", ctype: "application/json", body: `{}`, status: 200, wantGrace: 24 * time.Hour},
		{name: "null grace: 24h", ctype: "application/json", body: `{"grace":null}`, status: 200, wantGrace: 24 * time.Hour},
		{name: "90m", ctype: "application/json", body: `{"grace":"90m"}`, status: 200, wantGrace: 90 * time.Minute},
		{name: "no overlap", ctype: "application/json", body: `{"grace":"0s"}`, status: 200},
		{name: "seven days", ctype: "application/json", body: `{"grace":"168h"}`, status: 200, wantGrace: 168 * time.Hour},
		{name: "over seven days", ctype: "application/json", body: `{"grace":"169h"}`, status: 422, code: codeValidationFailed},
		{name: "negative", ctype: "application/json", body: `{"grace":"-1h"}`, status: 422, code: codeValidationFailed},
		{name: "not a duration", ctype: "application/json", body: `{"grace":"tomorrow"}`, status: 422, code: codeValidationFailed},
		{name: "a number", ctype: "application/json", body: `{"grace":3600}`, status: 422, code: codeValidationFailed},
		{name: "unknown member", ctype: "application/json", body: `{"grace":"1h","secret":"x"}`, status: 400, code: codeUnknownField},
		{name: "not JSON", ctype: "application/json", body: `{`, status: 400, code: codeInvalidJSON},
		{name: "wrong media type", ctype: "text/plain", body: `grace=1h`, status: 400, code: codeUnsupportedMediaType},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t)
			created := e.mustCreate(keyAcme, validBody)
			id, oldSecret := created["id"].(string), created["secret"].(string)
			before := time.Now().Truncate(time.Millisecond)
			r := e.do(http.MethodPost, "/api/webhook/"+id+"/rotate-secret", keyAcme, tc.ctype, strings.NewReader(tc.body))
			if tc.code != "" {
				wantError(t, r, tc.status, tc.code)
				if tc.status == 422 && details(t, r)["grace"] == nil {
					t.Fatalf("422 does not name grace: %s", r.raw)
				}
				if got := e.secret(id); got["secret"] != oldSecret || got["previousSecret"] != nil {
					t.Fatalf("a refused rotation changed the secret: %v", got)
				}
				return
			}
			if r.status != tc.status {
				t.Fatalf("status %d: %s", r.status, r.raw)
			}
			d := dataObject(t, r)
			if !sameKeys(d, "secret", "previousSecretExpiresAt") {
				t.Fatalf("answer keys %v", keysOf(d))
			}
			newSecret, _ := d["secret"].(string)
			if !strings.HasPrefix(newSecret, "whsec_") || newSecret == oldSecret {
				t.Fatalf("secret %q, want a fresh whsec_ secret", newSecret)
			}
			expires, err := time.Parse(time.RFC3339, d["previousSecretExpiresAt"].(string))
			if err != nil {
				t.Fatal(err)
			}
			if lo, hi := before.Add(tc.wantGrace), time.Now().Add(tc.wantGrace); expires.Before(lo) || expires.After(hi) {
				t.Fatalf("previousSecretExpiresAt %v, want within [%v, %v]", expires, lo, hi)
			}
			got := e.secret(id)
			if got["secret"] != newSecret {
				t.Fatalf("GET …/secret = %v, want the new secret", got)
			}
			if tc.wantGrace > 0 {
				if got["previousSecret"] != oldSecret || got["previousSecretExpiresAt"] != d["previousSecretExpiresAt"] {
					t.Fatalf("GET …/secret during grace = %v, want the old secret until %v", got, d["previousSecretExpiresAt"])
				}
			} else if !sameKeys(got, "secret") {
				t.Fatalf("GET …/secret without grace = %v, want the secret only", got)
			}
			// No view shows either secret.
			for _, path := range []string{"/api/webhook/" + id, "/api/webhook"} {
				view := e.do(http.MethodGet, path, keyAcme, "", nil)
				if strings.Contains(string(view.raw), "whsec_") || strings.Contains(string(view.raw), "previousSecret") {
					t.Fatalf("GET %s shows a secret: %s", path, view.raw)
				}
			}
		})
	}
}

func TestRotateSecretOtherWorkspace(t *testing.T) {
	e := newTestEnv(t)
	id := e.mustCreate(keyAcme, validBody)["id"].(string)
	for _, c := range []struct{ key, path string }{
		{keyOther, "/api/webhook/" + id + "/rotate-secret"},
		{keyAcme, "/api/webhook/wh_00000000000000000000000000/rotate-secret"},
	} {
		wantError(t, e.do(http.MethodPost, c.path, c.key, "", nil), http.StatusNotFound, codeNotFound)
	}
}

// secret reads GET /api/webhook/{id}/secret's data.
func (e *testEnv) secret(id string) map[string]any {
	e.t.Helper()
	r := e.do(http.MethodGet, "/api/webhook/"+id+"/secret", keyAcme, "", nil)
	if r.status != http.StatusOK {
		e.t.Fatalf("GET secret: %d %s", r.status, r.raw)
	}
	return dataObject(e.t, r)
}

// FuzzDecodeRotate: no body makes decodeRotate panic, and whatever it
// accepts is a grace period in bounds.
func FuzzDecodeRotate(f *testing.F) {
	for _, s := range []string{`{}`, `{"grace":"24h"}`, `{"grace":null}`, `{"grace":"-1s"}`, `{"grace":1}`, `{"x":1}`, `[]`, `null`, `{"grace":"9999999h"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		grace, err := decodeRotate(body)
		if err != nil {
			if _, unexpected := toAPIError(err); unexpected {
				t.Fatalf("decodeRotate error is not a client error: %v", err)
			}
			return
		}
		if grace < 0 || grace > 7*24*time.Hour {
			t.Fatalf("accepted grace %s", grace)
		}
	})
}
