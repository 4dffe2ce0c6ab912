// Package signature signs and verifies webhook deliveries as the Standard
// Webhooks specification (https://www.standardwebhooks.com) defines them, so
// receivers can verify webhookd's requests with the official libraries:
//
//	webhook-signature: v1,<base64(HMAC-SHA256(key, id + "." + timestamp + "." + body))>
//
// It also derives the stable webhook-id of a delivery.
package signature

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/webhookd/webhookd/events"
)

// SecretPrefix starts every secret webhookd hands out.
const SecretPrefix = "whsec_"

// DefaultTolerance is the Standard Webhooks default for how far a signed
// timestamp may be from the verifier's clock.
const DefaultTolerance = 5 * time.Minute

// Sentinel errors of Verify and ParseSecret.
var (
	ErrInvalidSecret = errors.New("invalid webhook secret")
	ErrNoMatch       = errors.New("no matching v1 signature")
	ErrTimestamp     = errors.New("timestamp outside tolerance")
)

// Secret is a parsed signing key. Parse it once per webhook and reuse it: it
// keeps a pool of keyed HMAC states, so signing does not redo the key setup.
// A Secret is safe for concurrent use.
type Secret struct {
	key  []byte
	pool *sync.Pool // of *signer
}

// signer is the per-goroutine scratch state for one signature.
type signer struct {
	mac    hash.Hash
	prefix []byte // id + "." + ts + "."
	sum    []byte
}

// ParseSecret accepts "whsec_<base64>" and, for secrets made elsewhere, a
// bare base64 key. Standard and unpadded base64 are both accepted.
func ParseSecret(s string) (Secret, error) {
	raw := strings.TrimPrefix(s, SecretPrefix)
	key, err := base64.StdEncoding.DecodeString(raw)
	if err != nil {
		key, err = base64.RawStdEncoding.DecodeString(raw)
	}
	if err != nil {
		return Secret{}, fmt.Errorf("%w: not base64", ErrInvalidSecret)
	}
	if len(key) == 0 {
		return Secret{}, fmt.Errorf("%w: empty key", ErrInvalidSecret)
	}
	return newSecret(key), nil
}

func newSecret(key []byte) Secret {
	return Secret{key: key, pool: &sync.Pool{New: func() any {
		return &signer{mac: hmac.New(sha256.New, key), sum: make([]byte, 0, sha256.Size)}
	}}}
}

// IsZero reports whether s was not obtained from ParseSecret.
func (s Secret) IsZero() bool { return len(s.key) == 0 }

// AppendSignature appends "v1,<signature>" of (id, ts, body) to dst. With a
// dst of sufficient capacity it does not allocate. It panics on a zero
// Secret, which is a programming error.
func (s Secret) AppendSignature(dst []byte, id string, ts int64, body []byte) []byte {
	if s.pool == nil {
		panic("signature: AppendSignature on a zero Secret")
	}
	sg := s.pool.Get().(*signer)
	sum := sg.compute(id, ts, body)
	dst = append(dst, "v1,"...)
	dst = base64.StdEncoding.AppendEncode(dst, sum)
	s.pool.Put(sg)
	return dst
}

// compute returns the raw MAC in sg's scratch space; it is valid until sg
// is reused.
func (sg *signer) compute(id string, ts int64, body []byte) []byte {
	// The prefix goes through one scratch buffer rather than a string
	// concatenation, so nothing is allocated once the buffer has grown.
	p := append(sg.prefix[:0], id...)
	p = append(p, '.')
	p = strconv.AppendInt(p, ts, 10)
	p = append(p, '.')
	sg.prefix = p
	sg.mac.Reset()
	sg.mac.Write(p)
	sg.mac.Write(body)
	sg.sum = sg.mac.Sum(sg.sum[:0])
	return sg.sum
}

// Sign is AppendSignature for callers that want a header value string.
func (s Secret) Sign(id string, ts int64, body []byte) string {
	var buf [3 + 44]byte
	return string(s.AppendSignature(buf[:0], id, ts, body))
}

// Verify checks a webhook-signature header value, which may list several
// space-separated signatures (e.g. during secret rotation), against the
// webhook-id id, the webhook-timestamp ts (unix seconds) and body. It
// refuses a timestamp more than tolerance away from now (tolerance <= 0
// means DefaultTolerance). Signatures of other versions than v1 are ignored.
func Verify(secret Secret, id string, ts int64, body []byte, header string, now time.Time, tolerance time.Duration) error {
	if secret.pool == nil {
		return fmt.Errorf("signature: verify: %w: zero Secret", ErrInvalidSecret)
	}
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	skew := now.Sub(time.Unix(ts, 0))
	if skew > tolerance || skew < -tolerance {
		return fmt.Errorf("signature: verify: %w: %d is %s from now", ErrTimestamp, ts, skew.Round(time.Second))
	}
	var want [3 + 44]byte
	expected := secret.AppendSignature(want[:0], id, ts, body)
	for _, candidate := range strings.Split(header, " ") {
		if len(candidate) == len(expected) && hmac.Equal([]byte(candidate), expected) {
			return nil
		}
	}
	return fmt.Errorf("signature: verify: %w", ErrNoMatch)
}

// DeliveryID is the webhook-id of the delivery of one event to one webhook
// (events.DeliveryID, which the management API also needs).
func DeliveryID(eventID, webhookID string) string { return events.DeliveryID(eventID, webhookID) }
