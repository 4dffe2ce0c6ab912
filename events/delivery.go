package events

import (
	"crypto/sha256"
	"encoding/hex"
)

// DeliveryID is the webhook-id of the delivery of one event to one webhook:
// "msg_" followed by 32 hex digits of SHA-256(eventID NUL webhookID). It is
// the same for every retry, redelivery and replay, which is what lets
// receivers deduplicate, and the NUL keeps ("a", "bc") apart from ("ab", "c").
func DeliveryID(eventID, webhookID string) string {
	h := sha256.New()
	h.Write([]byte(eventID))
	h.Write([]byte{0})
	h.Write([]byte(webhookID))
	var sum [sha256.Size]byte
	return "msg_" + hex.EncodeToString(h.Sum(sum[:0])[:16])
}
