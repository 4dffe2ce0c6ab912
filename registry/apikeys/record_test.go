package apikeys

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

const (
	testID   = "ak_0123456789abcdef"
	testHash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
)

func TestParseRecord(t *testing.T) {
	valid := `{"id":"` + testID + `","workspace":"acme","hash":"` + testHash + `","createdAt":"2026-01-02T03:04:05Z"}`
	tests := []struct {
		name  string
		kvKey string
		data  string
		ok    bool
	}{
		{"minimal", testID, valid, true},
		{"with expiry and revocation", testID, `{"id":"` + testID + `","workspace":"acme","hash":"` + testHash +
			`","createdAt":"2026-01-02T03:04:05Z","expiresAt":"2026-02-02T00:00:00Z","revoked":true,"revokedAt":"2026-01-03T00:00:00Z"}`, true},
		{"unknown fields ignored", testID, strings.Replace(valid, `{`, `{"future":[1,2],`, 1), true},
		{"stored under another key", "ak_fedcba9876543210", valid, false},
		{"not json", testID, `nope`, false},
		{"json array", testID, `[]`, false},
		{"bad id", "ak_XYZ", strings.ReplaceAll(valid, testID, "ak_XYZ"), false},
		{"bad workspace", testID, strings.Replace(valid, `"acme"`, `"ac me"`, 1), false},
		{"empty workspace", testID, strings.Replace(valid, `"acme"`, `""`, 1), false},
		{"upper-case hash", testID, strings.Replace(valid, testHash, strings.ToUpper(testHash), 1), false},
		{"short hash", testID, strings.Replace(valid, testHash, testHash[:62], 1), false},
		{"no creation time", testID, strings.Replace(valid, `"createdAt":"2026-01-02T03:04:05Z"`, `"createdAt":"0001-01-01T00:00:00Z"`, 1), false},
		{"expiry before creation", testID, strings.Replace(valid, `}`, `,"expiresAt":"2026-01-01T00:00:00Z"}`, 1), false},
		{"revoked without time", testID, strings.Replace(valid, `}`, `,"revoked":true}`, 1), false},
		{"revocation time without flag", testID, strings.Replace(valid, `}`, `,"revokedAt":"2026-01-03T00:00:00Z"}`, 1), false},
		{"too large", testID, strings.Replace(valid, `{`, `{"pad":"`+strings.Repeat("x", maxRecordBytes)+`",`, 1), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ParseRecord(tc.kvKey, []byte(tc.data))
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrMalformed) {
				t.Fatalf("err %v is not ErrMalformed", err)
			}
			if err == nil && (r.ID != testID || r.Workspace != "acme") {
				t.Fatalf("parsed %+v", r)
			}
		})
	}
}

func TestStateAt(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		rec  Record
		at   time.Duration
		want State
	}{
		{"never expires", Record{CreatedAt: t0}, 1000 * time.Hour, Active},
		{"before expiry", Record{CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}, 59 * time.Minute, Active},
		{"at expiry", Record{CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}, time.Hour, Expired},
		{"after expiry", Record{CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}, 2 * time.Hour, Expired},
		{"revoked", Record{CreatedAt: t0, Revoked: true, RevokedAt: t0}, 0, Revoked},
		{"revoked wins over expired", Record{CreatedAt: t0, ExpiresAt: t0.Add(time.Hour), Revoked: true, RevokedAt: t0}, 2 * time.Hour, Revoked},
	}
	for _, tc := range tests {
		if got := tc.rec.StateAt(t0.Add(tc.at)); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestNewKeyShapes(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 100; i++ {
		id, key, err := newKey()
		if err != nil {
			t.Fatal(err)
		}
		if !ValidID(id) || !LooksLikeKey(key) || seen[id] || seen[key] {
			t.Fatalf("id %q key (len %d) prefix %q: bad shape or repeated", id, len(key), key[:4])
		}
		seen[id], seen[key] = true, true
	}
	for _, s := range []string{"", "whk_", "whk_" + strings.Repeat("a", 42), "whk_" + strings.Repeat("a", 42) + "!",
		"wk_" + strings.Repeat("a", 44)} {
		if LooksLikeKey(s) {
			t.Errorf("LooksLikeKey(%q)", s)
		}
	}
}

// FuzzParseRecord: no input panics, and whatever parses survives a round
// trip through encode unchanged and is valid.
func FuzzParseRecord(f *testing.F) {
	f.Add(testID, []byte(`{"id":"`+testID+`","workspace":"acme","hash":"`+testHash+`","createdAt":"2026-01-02T03:04:05Z"}`))
	f.Add(testID, []byte(`{"id":"`+testID+`","workspace":"default","hash":"`+testHash+
		`","createdAt":"2026-01-02T03:04:05.123Z","expiresAt":"2027-01-02T03:04:05Z","revoked":true,"revokedAt":"2026-06-01T00:00:00+02:00"}`))
	f.Add("x", []byte(`{"id":"x"}`))
	f.Add(testID, []byte(`{"createdAt":"9999-99-99"}`))
	f.Fuzz(func(t *testing.T, kvKey string, data []byte) {
		r, err := ParseRecord(kvKey, data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			return
		}
		if r.ID != kvKey || r.validate() != nil {
			t.Fatalf("accepted an invalid record %+v under %q", r, kvKey)
		}
		b, err := r.encode()
		if err != nil {
			t.Fatalf("encode: %v", err)
		}
		back, err := ParseRecord(kvKey, b)
		if err != nil {
			t.Fatalf("round trip: %v (%s)", err, b)
		}
		if !reflect.DeepEqual(back, r) {
			// time.Time's monotonic and location details may differ;
			// compare instants.
			if back.ID != r.ID || back.Workspace != r.Workspace || back.Hash != r.Hash || back.Revoked != r.Revoked ||
				!back.CreatedAt.Equal(r.CreatedAt) || !back.ExpiresAt.Equal(r.ExpiresAt) || !back.RevokedAt.Equal(r.RevokedAt) {
				t.Fatalf("round trip changed %+v into %+v", r, back)
			}
		}
	})
}
