package signature

import "time"

// Keys are the secrets that sign a webhook's deliveries: Current always,
// and during a secret rotation's grace period Previous too, so that a
// receiver still verifying with the old secret accepts them.
type Keys struct {
	Current Secret
	// Previous signs while the signing time is before PreviousUntil; a
	// zero Previous never signs.
	Previous      Secret
	PreviousUntil time.Time
}

// AppendHeader appends the webhook-signature header value of (id, ts,
// body) signed at now to dst: "v1,<current>", followed by " v1,<previous>"
// while now is before PreviousUntil (the Standard Webhooks specification
// lets a header list several space-separated signatures). The grace period
// is checked here, at signing, so a cached Keys stops signing with the old
// secret as soon as it ends. It panics on a zero Current.
func (k Keys) AppendHeader(dst []byte, id string, ts int64, body []byte, now time.Time) []byte {
	dst = k.Current.AppendSignature(dst, id, ts, body)
	if !k.Previous.IsZero() && now.Before(k.PreviousUntil) {
		dst = append(dst, ' ')
		dst = k.Previous.AppendSignature(dst, id, ts, body)
	}
	return dst
}
