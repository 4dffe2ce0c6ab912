package registry

import (
	"encoding/base64"
	"encoding/binary"
	"strings"
	"time"

	"github.com/webhookd/webhookd/events"
)

// A record is one webhook as the index stores it in its arena. Fields a
// webhook of the API always has in one shape are packed: an id of
// "wh_" + 26 base32 digits is its 16 bytes, a secret of "whsec_" + base64
// its 32. The workspace, event type and URL, which many webhooks share,
// are interned. Anything else is stored as it is, so every webhook
// round-trips exactly except for times with a location or monotonic
// reading; those webhooks are kept whole (pinned) beside their record.
//
// Layout: flags, type ref, workspace ref, workflow id, URL ref, id,
// secret, [created], disabled reason, [disabled at], description,
// [previous secret], [previous secret until]. Refs are uvarint offsets of
// interned strings; strings are uvarint-length-prefixed; times are 8
// bytes of unix nanoseconds; bracketed fields are present per flag.
const (
	fDisabled = 1 << iota
	fRawID
	fRawSecret
	fPrevious
	fRawPrevious
	fCreated
	fDisabledAt
	fPreviousUntil
)

// appendRecord encodes w into the arena and returns its offset and
// whether decodeRecord gives back exactly w.
func (a *arena) appendRecord(buf []byte, w *Webhook) (off uint64, exact bool, scratch []byte) {
	exact = true
	var flags byte
	if w.Disabled {
		flags |= fDisabled
	}
	b := append(buf[:0], 0)
	b = binary.AppendUvarint(b, a.intern(string(w.EventType)))
	b = binary.AppendUvarint(b, a.intern(w.Workspace))
	b = appendString(b, w.WorkflowID)
	b = binary.AppendUvarint(b, a.intern(w.URL))
	if k, ok := packID(w.ID); ok {
		b = append(b, k[:]...)
	} else {
		flags |= fRawID
		b = appendString(b, w.ID)
	}
	b, flags = appendSecret(b, w.Secret, flags, fRawSecret)
	b, flags = appendTime(b, w.CreatedAt, flags, fCreated, &exact)
	b = appendString(b, w.DisabledReason)
	b, flags = appendTime(b, w.DisabledAt, flags, fDisabledAt, &exact)
	b = appendString(b, w.Description)
	if w.PreviousSecret != "" {
		flags |= fPrevious
		b, flags = appendSecret(b, w.PreviousSecret, flags, fRawPrevious)
	}
	b, flags = appendTime(b, w.PreviousSecretUntil, flags, fPreviousUntil, &exact)
	b[0] = flags
	off, dst := a.alloc(len(b))
	copy(dst, b)
	return off, exact, b
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendSecret(b []byte, secret string, flags, raw byte) ([]byte, byte) {
	if k, ok := packSecret(secret); ok {
		return append(b, k[:]...), flags
	}
	return appendString(b, secret), flags | raw
}

// appendTime stores t as unix nanoseconds when that gives t back exactly
// (UTC, no monotonic reading); *exact turns false when it does not.
func appendTime(b []byte, t time.Time, flags, present byte, exact *bool) ([]byte, byte) {
	if t == (time.Time{}) {
		return b, flags
	}
	n := t.UnixNano()
	if time.Unix(0, n).UTC() != t {
		*exact = false
	}
	return binary.LittleEndian.AppendUint64(b, uint64(n)), flags | present
}

// recordKey reads a record's match key fields and flags, sharing the
// arena's bytes.
func (a *arena) recordKey(off uint64) (flags byte, t events.Type, workspace, workflowID string) {
	b := a.at(off)
	flags = b[0]
	ref, k := readUvarint(b[1:])
	b = b[1+k:]
	t = events.Type(a.str(uint64(ref)))
	ref, k = readUvarint(b)
	workspace = a.str(uint64(ref))
	workflowID, _ = readString(b[k:])
	return flags, t, workspace, workflowID
}

// decodeRecord rebuilds the webhook stored at off. With own false its
// strings share the arena's bytes (the id and secrets are unpacked
// anyway), for brief use. A webhook handed out gets strings of its own
// (own true): it may live for as long as its holder likes, and sharing
// would keep a whole chunk, and after a compaction a whole old arena,
// alive for it.
func (a *arena) decodeRecord(off uint64, own bool) *Webhook {
	str := func(s string) string { return s }
	if own {
		str = strings.Clone
	}
	w := new(Webhook)
	b := a.at(off)
	flags := b[0]
	w.Disabled = flags&fDisabled != 0
	ref, k := readUvarint(b[1:])
	b = b[1+k:]
	w.EventType = ownType(events.Type(a.str(uint64(ref))), str)
	ref, k = readUvarint(b)
	w.Workspace = str(a.str(uint64(ref)))
	w.WorkflowID, b = readString(b[k:])
	w.WorkflowID = str(w.WorkflowID)
	ref, k = readUvarint(b)
	w.URL = str(a.str(uint64(ref)))
	b = b[k:]
	if flags&fRawID != 0 {
		w.ID, b = readString(b)
		w.ID = str(w.ID)
	} else {
		w.ID, b = unpackID([16]byte(b[:16])), b[16:]
	}
	w.Secret, b = readSecret(b, flags&fRawSecret != 0, str)
	w.CreatedAt, b = readTime(b, flags&fCreated != 0)
	w.DisabledReason, b = readString(b)
	w.DisabledReason = ownReason(w.DisabledReason, str)
	w.DisabledAt, b = readTime(b, flags&fDisabledAt != 0)
	w.Description, b = readString(b)
	w.Description = str(w.Description)
	if flags&fPrevious != 0 {
		w.PreviousSecret, b = readSecret(b, flags&fRawPrevious != 0, str)
	}
	w.PreviousSecretUntil, _ = readTime(b, flags&fPreviousUntil != 0)
	return w
}

// ownType returns t as the constant's bytes when it is a known type.
func ownType(t events.Type, str func(string) string) events.Type {
	for _, c := range events.Types {
		if t == c {
			return c
		}
	}
	return events.Type(str(string(t)))
}

// ownReason returns r as the constant's bytes when it is a known reason.
func ownReason(r string, str func(string) string) string {
	for _, c := range [...]string{"", DisabledFailing, DisabledGone, DisabledManual} {
		if r == c {
			return c
		}
	}
	return str(r)
}

func readSecret(b []byte, raw bool, str func(string) string) (string, []byte) {
	if raw {
		s, b := readString(b)
		return str(s), b
	}
	return secretPrefix + base64.StdEncoding.EncodeToString(b[:32]), b[32:]
}

func readTime(b []byte, present bool) (time.Time, []byte) {
	if !present {
		return time.Time{}, b
	}
	return time.Unix(0, int64(binary.LittleEndian.Uint64(b))).UTC(), b[8:]
}

const (
	idPrefix     = "wh_"
	secretPrefix = "whsec_"
)

// crockfordValue maps a byte to its crockford digit's value, -1 for none:
// Get unpacks an id on every call.
var crockfordValue = func() (t [256]int8) {
	for i := range t {
		t[i] = -1
	}
	for i := range len(crockford) {
		t[crockford[i]] = int8(i)
	}
	return t
}()

// packID returns the 128 bits of an id as newID makes them; false for any
// other id (tests and hand-made records), which is then stored as text.
func packID(id string) ([16]byte, bool) {
	var k [16]byte
	digits, ok := strings.CutPrefix(id, idPrefix)
	if !ok || len(digits) != 26 {
		return k, false
	}
	// 26 digits carry 130 bits, the top two zero: 8 bits in the first two
	// digits, then two runs of 60 bits in 12 digits each, each run summed
	// in one word.
	d := digits[:26]
	bad := crockfordValue[d[0]] | crockfordValue[d[1]]
	top := uint64(crockfordValue[d[0]])<<5 | uint64(crockfordValue[d[1]])
	var mid, low uint64
	for i := 2; i < 14; i++ {
		v := crockfordValue[d[i]]
		bad |= v
		mid = mid<<5 | uint64(v)
	}
	for i := 14; i < 26; i++ {
		v := crockfordValue[d[i]]
		bad |= v
		low = low<<5 | uint64(v)
	}
	if bad < 0 || top > 0xff {
		return k, false
	}
	binary.BigEndian.PutUint64(k[:8], top<<56|mid>>4)
	binary.BigEndian.PutUint64(k[8:], mid<<60|low)
	return k, true
}

// unpackID is the inverse of packID.
func unpackID(k [16]byte) string {
	hi, lo := binary.BigEndian.Uint64(k[:8]), binary.BigEndian.Uint64(k[8:])
	var b [3 + 26]byte
	copy(b[:], idPrefix)
	for i := 25; i >= 0; i-- {
		b[3+i] = crockford[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return string(b[:])
}

var strictBase64 = base64.StdEncoding.Strict()

// packSecret returns the 32 key bytes of a secret New makes; false for
// any other text, which is then stored as it is.
func packSecret(secret string) ([32]byte, bool) {
	var k [32]byte
	enc, ok := strings.CutPrefix(secret, secretPrefix)
	if !ok || base64.StdEncoding.EncodedLen(32) != len(enc) || strings.ContainsAny(enc, "\r\n") {
		return k, false
	}
	// Strict refuses non-zero padding bits, so only the text
	// EncodeToString makes of k decodes: the secret unpacks exactly.
	// 44 characters without padding decode to 33 bytes: decode into room
	// for them, so such a secret is stored as text rather than overrun k.
	var in [44]byte
	var out [33]byte
	copy(in[:], enc)
	n, err := strictBase64.Decode(out[:], in[:])
	copy(k[:], out[:32])
	return k, err == nil && n == 32
}
