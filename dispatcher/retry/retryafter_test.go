package retry

import (
	"net/http"
	"testing"
	"time"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in     string
		want   time.Duration
		wantOK bool
	}{
		{"0", 0, true},
		{"120", 2 * time.Minute, true},
		{" 30 ", 30 * time.Second, true},
		{"007", 7 * time.Second, true},
		{"31536000", 365 * 24 * time.Hour, true},
		{"31536001", 0, false},
		{"99999999999999999999999", 0, false},
		{"-5", 0, false},
		{"+5", 0, false},
		{"1.5", 0, false},
		{"5s", 0, false},
		{"1e3", 0, false},
		{"", 0, false},
		{"   ", 0, false},
		{"soon", 0, false},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{"Sun, 01 Jun 2025 13:00:00 GMT", time.Hour, true},
		{"Sunday, 01-Jun-25 13:00:00 GMT", time.Hour, true}, // RFC 850
		{"Sun Jun  1 13:00:00 2025", time.Hour, true},       // asctime
		{"Sun, 01 Jun 2025 12:00:00 GMT", 0, true},
		{"Sat, 31 May 2025 12:00:00 GMT", 0, true},
		{"Thu, 01 Jan 1970 00:00:00 GMT", 0, true},
		{"Fri, 31 Dec 9999 23:59:59 GMT", 0, false},
		{"Sun, 01 Jun 2025 13:00:00 PST", 0, false},
		{"2025-06-01T13:00:00Z", 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, ok := ParseRetryAfter(tc.in, now)
			if got != tc.want || ok != tc.wantOK {
				t.Fatalf("ParseRetryAfter(%q) = %s, %v; want %s, %v", tc.in, got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"0", "120", "-1", "1.5", "", "Sun, 01 Jun 2025 13:00:00 GMT",
		"Sunday, 01-Jun-25 13:00:00 GMT", "Sun Jun  1 13:00:00 2025", "31536001", "9223372036854775808"} {
		f.Add(s)
	}
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		d, ok := ParseRetryAfter(s, now)
		if !ok && d != 0 {
			t.Fatalf("ParseRetryAfter(%q) = %s with ok=false", s, d)
		}
		if d < 0 || d > MaxRetryAfterValue {
			t.Fatalf("ParseRetryAfter(%q) = %s, out of [0, %s]", s, d, MaxRetryAfterValue)
		}
	})
}
