package dispatcher

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"time"

	"github.com/webhookd/webhookd/dispatcher/signature"
	"github.com/webhookd/webhookd/events"
	"github.com/webhookd/webhookd/registry"
	"github.com/webhookd/webhookd/registry/api"
)

// TestEventType is the type of the event SendTest sends.
const TestEventType events.Type = "webhook.test"

// testEvent is the body of a test delivery.
type testEvent struct {
	Type      events.Type `json:"type"`
	WebhookID string      `json:"webhookId"`
	Timestamp string      `json:"timestamp"`
}

// SendTest sends a signed webhook.test event to w's URL now and waits for
// the answer, with the client (and so the SSRF guard), headers, signing
// (both secrets during a rotation's grace period) and timeout of real
// deliveries. It is a debugging aid: nothing is queued, retried or
// recorded, and the webhook's circuit and health are neither consulted
// nor changed, so it also reaches a disabled webhook or an open circuit.
// Every delivery outcome is in the result; an error means the test could
// not be attempted (ctx already done, an unusable stored URL or secret).
func (d *Dispatcher) SendTest(ctx context.Context, w registry.Webhook) (api.TestResult, error) {
	u, err := url.Parse(w.URL)
	if err != nil {
		return api.TestResult{}, fmt.Errorf("dispatcher: test %s: unparseable url", w.ID)
	}
	keys, err := signingKeys(&w)
	if err != nil {
		return api.TestResult{}, fmt.Errorf("dispatcher: test %s: %w", w.ID, err)
	}
	var nonce [16]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return api.TestResult{}, fmt.Errorf("dispatcher: test %s: %w", w.ID, err)
	}
	now := time.Now()
	body, err := json.Marshal(testEvent{Type: TestEventType, WebhookID: w.ID, Timestamp: now.UTC().Format(time.RFC3339Nano)})
	if err != nil {
		return api.TestResult{}, fmt.Errorf("dispatcher: test %s: %w", w.ID, err)
	}
	// A fresh id per test: receivers deduplicating on webhook-id must not
	// drop the second test of a webhook.
	j := job{WebhookID: w.ID, Workspace: w.Workspace, DeliveryID: signature.DeliveryID("test:"+hex.EncodeToString(nonce[:]), w.ID), Body: body}
	if err := ctx.Err(); err != nil {
		return api.TestResult{}, fmt.Errorf("dispatcher: test %s: %w", w.ID, err)
	}
	// post bounds the attempt by DeliveryTimeout, as for real deliveries
	// (it does not follow ctx: a caller going away costs at most that).
	status, _, kind, snippet, err := d.post(&target{wh: &w, url: u, keys: keys}, &j, now, true)
	res := api.TestResult{
		Delivered: kind == errNone && status >= 200 && status < 300,
		Status:    status,
		Duration:  time.Since(now),
		MessageID: j.DeliveryID,
		Response:  snippet,
	}
	switch {
	case err != nil:
		res.Error = statusClass(status, kind) + ": " + err.Error()
	case !res.Delivered:
		res.Error = fmt.Sprintf("%s: HTTP %d", statusClass(status, kind), status)
	}
	return res, nil
}
