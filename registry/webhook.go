package registry

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/webhookd/webhookd/events"
)

// Sentinel errors for expected outcomes.
var (
	// ErrNotFound: no such webhook in the caller's workspace (ids of other
	// workspaces are indistinguishable from unknown ones).
	ErrNotFound = errors.New("registry: not found")
	// ErrLocked: another process holds the bbolt file.
	ErrLocked = errors.New("registry: data dir is locked by another process")
	// ErrBadCursor: a list cursor this server did not produce.
	ErrBadCursor = errors.New("registry: invalid cursor")
)

// Webhook is one subscription.
type Webhook struct {
	ID         string      `json:"id"`
	Workspace  string      `json:"workspace"`
	URL        string      `json:"url"`
	EventType  events.Type `json:"eventType"`
	WorkflowID string      `json:"workflowId"` // empty: every workflow
	Secret     string      `json:"secret"`     // "whsec_" + base64 of 32 random bytes
	CreatedAt  time.Time   `json:"createdAt"`
	// Disabled webhooks stay registered (Get and List show them, so they
	// can be inspected and re-enabled) but match no event: fan-out makes no
	// new jobs for them. Records stored before this field decode as enabled.
	Disabled bool `json:"disabled,omitempty"`
	// DisabledReason says why (DisabledFailing, DisabledGone,
	// DisabledManual); empty while enabled.
	DisabledReason string `json:"disabledReason,omitempty"`
	// DisabledAt is when it was disabled, to the millisecond; zero while
	// enabled.
	DisabledAt time.Time `json:"disabledAt,omitzero"`
	// Description is the owner's free text about the webhook: at most
	// MaxDescriptionLen printable characters (CheckDescription), "" for
	// none. webhookd never acts on it. Records stored before this field
	// decode without one.
	Description string `json:"description,omitempty"`
	// PreviousSecret is the secret RotateSecret replaced, still signing
	// deliveries (next to Secret) until PreviousSecretUntil; "" when there
	// is none. Sealed at rest like Secret. It stays stored after the grace
	// period ends, unused, until the next rotation replaces or drops it.
	PreviousSecret string `json:"previousSecret,omitempty"`
	// PreviousSecretUntil is when PreviousSecret stops signing, to the
	// millisecond; zero when there is no previous secret.
	PreviousSecretUntil time.Time `json:"previousSecretUntil,omitzero"`
}

// Reasons a webhook is disabled, as Disable records them.
const (
	// DisabledFailing: no delivery succeeded for the dispatcher's
	// disable-after period.
	DisabledFailing = "failing"
	// DisabledGone: the receiver answered 410 Gone.
	DisabledGone = "gone"
	// DisabledManual: disabled on request, with no reason given.
	DisabledManual = "manual"
)

// Input is what a caller asks to register.
type Input struct {
	URL        string
	EventType  string
	WorkflowID string
}

// New builds a webhook with a fresh id and secret. It does not validate;
// run Validator.Validate first.
func New(workspace string, in Input, now time.Time) (Webhook, error) {
	id, err := newID(now)
	if err != nil {
		return Webhook{}, err
	}
	var key [32]byte
	if _, err := rand.Read(key[:]); err != nil {
		return Webhook{}, fmt.Errorf("registry: secret: %w", err)
	}
	return Webhook{
		ID: id, Workspace: workspace, URL: in.URL, EventType: events.Type(in.EventType),
		WorkflowID: in.WorkflowID, Secret: "whsec_" + base64.StdEncoding.EncodeToString(key[:]),
		CreatedAt: now.UTC().Truncate(time.Millisecond),
	}, nil
}

// crockford is Crockford's base32 alphabet, lower case: ids sort as their
// bytes do.
const crockford = "0123456789abcdefghjkmnpqrstvwxyz"

// newID returns "wh_" + 26 base32 characters of a 48-bit millisecond time
// and 80 random bits: unique, and sortable by creation time.
func newID(now time.Time) (string, error) {
	var b [16]byte
	ms := uint64(now.UnixMilli())
	binary.BigEndian.PutUint64(b[:8], ms<<16)
	if _, err := rand.Read(b[6:]); err != nil {
		return "", fmt.Errorf("registry: id: %w", err)
	}
	var sb strings.Builder
	sb.Grow(3 + 26)
	sb.WriteString("wh_")
	// 128 bits -> 26 base32 digits, most significant first.
	hi, lo := binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
	for i := 25; i >= 0; i-- {
		shift := uint(i * 5)
		var v uint64
		switch {
		case shift >= 64:
			v = hi >> (shift - 64)
		case shift > 59:
			v = lo>>shift | hi<<(64-shift)
		default:
			v = lo >> shift
		}
		sb.WriteByte(crockford[v&31])
	}
	return sb.String(), nil
}
