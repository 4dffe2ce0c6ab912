package signature

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// TestKeysRotationWithOfficialLibrary: during a rotation's grace period a
// header verifies, with the official Go library, under the new secret and
// under the old one; at and after its end only under the new one.
func TestKeysRotationWithOfficialLibrary(t *testing.T) {
	oldRaw, newRaw, strangerRaw := randomSecret(t), randomSecret(t), randomSecret(t)
	until := time.Now().Add(time.Hour).Truncate(time.Second)
	cases := []struct {
		name        string
		keys        Keys
		signedAt    time.Time
		wantSigs    int
		oldVerifies bool
	}{
		{"no previous secret", Keys{Current: mustSecret(t, newRaw)}, until.Add(-time.Minute), 1, false},
		{"in grace", Keys{mustSecret(t, newRaw), mustSecret(t, oldRaw), until}, until.Add(-time.Minute), 2, true},
		{"last instant of grace", Keys{mustSecret(t, newRaw), mustSecret(t, oldRaw), until}, until.Add(-time.Nanosecond), 2, true},
		{"grace ends", Keys{mustSecret(t, newRaw), mustSecret(t, oldRaw), until}, until, 1, false},
		{"after grace", Keys{mustSecret(t, newRaw), mustSecret(t, oldRaw), until}, until.Add(time.Hour), 1, false},
		{"previous without an end never signs", Keys{Current: mustSecret(t, newRaw), Previous: mustSecret(t, oldRaw)}, until, 1, false},
	}
	body := []byte(`{"type":"workflowRun.completed","workflowId":"WFCG-1"}`)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := DeliveryID("evt-1", "wh_1")
			ts := time.Now().Unix() // the official library checks it against its own clock
			header := string(tc.keys.AppendHeader(nil, id, ts, body, tc.signedAt))
			if n := len(strings.Split(header, " ")); n != tc.wantSigs {
				t.Fatalf("header %q has %d signatures, want %d", header, n, tc.wantSigs)
			}
			h := http.Header{}
			h.Set(standardwebhooks.HeaderWebhookID, id)
			h.Set(standardwebhooks.HeaderWebhookTimestamp, strconv.FormatInt(ts, 10))
			h.Set(standardwebhooks.HeaderWebhookSignature, header)
			for _, v := range []struct {
				secret string
				want   bool
			}{{newRaw, true}, {oldRaw, tc.oldVerifies}, {strangerRaw, false}} {
				wh, err := standardwebhooks.NewWebhook(v.secret)
				if err != nil {
					t.Fatal(err)
				}
				if err := wh.Verify(body, h); (err == nil) != v.want {
					t.Errorf("official Verify with the %s secret = %v, want ok=%v",
						map[string]string{newRaw: "new", oldRaw: "old", strangerRaw: "unrelated"}[v.secret], err, v.want)
				}
			}
			// Our own Verify agrees.
			if err := Verify(mustSecret(t, oldRaw), id, ts, body, header, time.Unix(ts, 0), 0); (err == nil) != tc.oldVerifies {
				t.Errorf("Verify with the old secret = %v, want ok=%v", err, tc.oldVerifies)
			}
		})
	}
}
