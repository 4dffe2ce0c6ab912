package retry

import (
	"net/http"
	"strings"
	"time"
)

// MaxRetryAfterValue is the longest Retry-After ParseRetryAfter accepts; a
// longer one is treated as garbage rather than as a reason to wait for years.
// Policy.MaxRetryAfter caps what is actually honoured.
const MaxRetryAfterValue = 365 * 24 * time.Hour

// ParseRetryAfter parses a Retry-After header value (RFC 9110 §10.2.3):
// either delta-seconds ("120") or an HTTP-date, relative to now. A date in
// the past means 0. It returns false for an empty, malformed or negative
// value or one beyond MaxRetryAfterValue.
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if isDigits(v) {
		const maxSeconds = int64(MaxRetryAfterValue / time.Second)
		var secs int64
		for i := 0; i < len(v); i++ {
			secs = secs*10 + int64(v[i]-'0')
			if secs > maxSeconds {
				return 0, false
			}
		}
		return time.Duration(secs) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	d := t.Sub(now)
	switch {
	case d <= 0:
		return 0, true
	case d > MaxRetryAfterValue:
		return 0, false
	}
	return d, true
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
