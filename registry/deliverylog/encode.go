package deliverylog

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// appendAttempt appends a as one JSON object, the same one encoding/json
// writes for it (TestAppendAttemptMatchesEncodingJSON holds them equal),
// without reflection: the delivery path encodes one per attempt.
func appendAttempt(b []byte, a *Attempt) []byte {
	b = append(b, `{"deliveryId":`...)
	b = appendString(b, a.DeliveryID)
	b = append(b, `,"webhookId":`...)
	b = appendString(b, a.WebhookID)
	b = append(b, `,"workspace":`...)
	b = appendString(b, a.Workspace)
	b = append(b, `,"eventId":`...)
	b = appendString(b, a.EventID)
	b = append(b, `,"eventType":`...)
	b = appendString(b, a.EventType)
	b = append(b, `,"publishedAt":`...)
	b = appendTime(b, a.Published)
	b = append(b, `,"attempt":`...)
	b = strconv.AppendInt(b, int64(a.Attempt), 10)
	b = append(b, `,"at":`...)
	b = appendTime(b, a.At)
	b = append(b, `,"durationNs":`...)
	b = strconv.AppendInt(b, int64(a.Duration), 10)
	if a.Status != 0 {
		b = append(b, `,"status":`...)
		b = strconv.AppendInt(b, int64(a.Status), 10)
	}
	b = appendOptional(b, `,"errorClass":`, a.ErrorClass)
	b = appendOptional(b, `,"error":`, a.Error)
	b = appendOptional(b, `,"response":`, a.Response)
	b = append(b, `,"state":`...)
	b = appendString(b, string(a.State))
	if !a.NextAttemptAt.IsZero() {
		b = append(b, `,"nextAttemptAt":`...)
		b = appendTime(b, a.NextAttemptAt)
	}
	b = appendOptional(b, `,"reason":`, a.Reason)
	b = appendOptional(b, `,"trigger":`, a.Trigger)
	return append(b, '}')
}

func appendOptional(b []byte, key, v string) []byte {
	if v == "" {
		return b
	}
	return appendString(append(b, key...), v)
}

func appendTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string, escaped as encoding/json
// escapes it (HTML characters included, invalid UTF-8 as U+FFFD).
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
