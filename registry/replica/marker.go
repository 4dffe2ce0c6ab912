package replica

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// markerKey is the bucket's sealing marker. "<key id>" says every entry is
// sealed with that key: an instance with encryption on then refuses any
// plaintext entry. "<key id>@<revision>" says encryption was turned on
// when the bucket stood at that revision and its entries are being
// re-sealed: plaintext entries up to it are accepted (to be re-sealed),
// later ones refused. The first instance with a key writes the second form
// before it follows the bucket, so no instance, early or late, trusts a
// plaintext entry planted after encryption was turned on. It is not a
// webhook id, so no webhook can collide with it.
//
// A sealed marker written after a rotation also names the keys the bucket
// was sealed with before, newest first: "<key id>;retired=<id>,<id>". An
// instance whose first key is among them is behind the rotation and never
// re-seals the bucket back to it (see resealReason).
const markerKey = "_sealing"

// retiredTag starts a sealed marker's list of retired key ids.
const retiredTag = ";retired="

// maxRetired bounds the retired key ids a marker carries; a key that many
// rotations old is not in anyone's --encryption-key any more.
const maxRetired = 16

// A marker is the sealing marker's value, parsed.
type marker struct {
	keyID     string
	since     uint64 // migrating: the bucket's revision when encryption was turned on
	migrating bool
	retired   []string // keys the bucket was sealed with before keyID, newest first
}

// parseMarker reads a marker value; an unreadable revision reads as a
// sealed marker (the strict reading).
func parseMarker(v string) marker {
	v, retired, _ := strings.Cut(v, retiredTag)
	var m marker
	if retired != "" {
		m.retired = strings.Split(retired, ",")
	}
	id, rev, ok := strings.Cut(v, "@")
	m.keyID = id
	if !ok {
		return m
	}
	n, err := strconv.ParseUint(rev, 10, 64)
	if err != nil {
		return m
	}
	m.since, m.migrating = n, true
	return m
}

func (m marker) String() string {
	switch {
	case m.migrating:
		return m.keyID + "@" + strconv.FormatUint(m.since, 10)
	case len(m.retired) > 0:
		return m.keyID + retiredTag + strings.Join(m.retired, ",")
	}
	return m.keyID
}

// retires reports whether the bucket was sealed with keyID before and
// has been re-sealed with a newer key since.
func (m marker) retires(keyID string) bool { return slices.Contains(m.retired, keyID) }

// successor is the marker a pass that re-sealed every entry with keyID
// writes over m: the key m names, when another, becomes the newest
// retired one.
func (m marker) successor(keyID string) marker {
	next := marker{keyID: keyID}
	if m.keyID != "" && m.keyID != keyID {
		next.retired = append(next.retired, m.keyID)
	}
	for _, id := range m.retired {
		if id != keyID && !slices.Contains(next.retired, id) {
			next.retired = append(next.retired, id)
		}
	}
	if len(next.retired) > maxRetired {
		next.retired = next.retired[:maxRetired]
	}
	return next
}

// errRotatedPast: while this instance re-sealed the bucket, another one
// sealed it with a newer key, which retires this instance's.
var errRotatedPast = errors.New("the shared registry was re-sealed with a newer key meanwhile")

// writeMarker records, after a pass that re-sealed every entry with
// keyID, that the bucket is sealed with it: a compare-and-swap over the
// marker as it stands, so that a newer rotation finished meanwhile is
// never undone.
func writeMarker(ctx context.Context, kv jetstream.KeyValue, keyID string) error {
	e, err := kv.Get(ctx, markerKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		_, err = kv.Create(ctx, markerKey, []byte(keyID))
		return err
	}
	if err != nil {
		return err
	}
	cur := parseMarker(string(e.Value()))
	if cur.retires(keyID) {
		return fmt.Errorf("%w (marker %q)", errRotatedPast, e.Value())
	}
	_, err = kv.Update(ctx, markerKey, []byte(cur.successor(keyID).String()), e.Revision())
	return err
}
