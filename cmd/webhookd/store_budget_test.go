package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/webhookd/webhookd/dispatcher/capacity"
)

var limitRe = regexp.MustCompile(`(?m)^webhookd_store_limit_bytes\{([^}]*)\} (\S+)$`)

// storeLimits reads webhookd_store_limit_bytes by stream from /metrics.
func storeLimits(t *testing.T, d *daemon) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, m := range limitRe.FindAllStringSubmatch(string(scrape(t, d)), -1) {
		stream := regexp.MustCompile(`stream="([^"]*)"`).FindStringSubmatch(m[1])
		v, err := strconv.ParseFloat(m[2], 64)
		if stream == nil || err != nil {
			t.Fatalf("bad sample %q", m[0])
		}
		out[stream[1]] = v
	}
	return out
}

func readyz(t *testing.T, d *daemon) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + d.httpAddr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestMinimumStoreSetsUpEveryStream: with the smallest --nats-max-store
// accepted, every stream and bucket webhookd creates fits the embedded
// server's store (which reserves each MaxBytes), the daemon becomes ready,
// and /metrics gives each its budgeted limit. Then, with fan-out paused by
// a full deliveries stream, events fill the events stream: publishers get
// a JetStream error, every acknowledged event is kept, and /readyz stays
// 200 with warnings naming the full streams.
func TestMinimumStoreSetsUpEveryStream(t *testing.T) {
	d := newDaemon(t, "--nats-max-store", strconv.Itoa(capacity.MinStore))
	d.start()
	lim := capacity.Budget(capacity.MinStore)
	want := map[string]int64{
		"WEBHOOKD_EVENTS": lim.Events, "WEBHOOKD_DELIVERIES": lim.Deliveries,
		"KV_WEBHOOKD_REGISTRY": lim.Registry, "KV_WEBHOOKD_HEALTH": lim.Health,
		"WEBHOOKD_FAILURES": lim.Failures, "WEBHOOKD_ATTEMPTS": lim.Attempts,
		"KV_WEBHOOKD_KEYS": lim.Keys, "KV_WEBHOOKD_REPLAYS": lim.Replays,
	}
	var got map[string]float64
	waitUntilOr(t, 20*time.Second, func() bool {
		got = storeLimits(t, d)
		for name, v := range want {
			if got[name] != float64(v) {
				return false
			}
		}
		return true
	}, func() string { return fmt.Sprintf("webhookd_store_limit_bytes %v, want %v", got, want) })

	js := d.jetStream()
	ctx := t.Context()
	var reserved int64
	for name, v := range want {
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		if name == "WEBHOOKD_DELIVERIES" {
			continue // bounded by fan-out, not the server (message schedules need DiscardOld)
		}
		if mb := st.CachedInfo().Config.MaxBytes; mb != v {
			t.Errorf("%s MaxBytes %d, want its share %d", name, mb, v)
		}
		reserved += v
	}
	if reserved > capacity.MinStore {
		t.Errorf("streams reserve %d bytes of a %d-byte store", reserved, capacity.MinStore)
	}
	if code, body := readyz(t, d); code != http.StatusOK || strings.Contains(body, "warnings") {
		t.Fatalf("/readyz on an empty store: %d %s", code, body)
	}

	// A dead receiver's scheduled retries, as far as the store is
	// concerned: work that waits in the deliveries stream. Past 90% of its
	// share fan-out pauses, so events wait in the events stream.
	body := make([]byte, 64<<10)
	for i := 0; float64(i*len(body)) < 0.97*float64(lim.Deliveries); i++ {
		if _, err := js.Publish(ctx, fmt.Sprintf("webhookd.deliveries.sched.wh_dead.d%d", i), body); err != nil {
			t.Fatalf("filling the deliveries stream: %v", err)
		}
	}
	waitUntil(t, 10*time.Second, "fan-out to pause", func() bool {
		return strings.Contains(string(scrape(t, d)), "\nwebhookd_fanout_paused 1")
	})

	event := []byte(`{"type":"workflowRun.completed","pad":"` + strings.Repeat("x", 60<<10) + `"}`)
	acked := 0
	var refused error
	for refused == nil && acked < 10000 {
		if _, err := js.Publish(ctx, "events.acme.workflowRun.completed", event); err != nil {
			refused = err
		} else {
			acked++
		}
	}
	var apiErr *jetstream.APIError
	if !errors.As(refused, &apiErr) || !strings.Contains(apiErr.Description, "maximum bytes exceeded") {
		t.Fatalf("after %d events the publish error is %v, want a JetStream \"maximum bytes exceeded\"", acked, refused)
	}
	var code int
	var ready string
	waitUntilOr(t, 15*time.Second, func() bool {
		code, ready = readyz(t, d)
		return code == http.StatusOK && strings.Contains(ready, "stream nearly full") &&
			strings.Contains(ready, "WEBHOOKD_EVENTS at 9") && strings.Contains(ready, "WEBHOOKD_DELIVERIES at 9")
	}, func() string { return fmt.Sprintf("/readyz = %d %s", code, ready) })
	st, err := js.Stream(ctx, "WEBHOOKD_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	if s := st.CachedInfo().State; s.FirstSeq != 1 || s.Msgs != uint64(acked) {
		t.Errorf("events stream holds %d events from seq %d, want all %d acknowledged from seq 1", s.Msgs, s.FirstSeq, acked)
	}
	t.Logf("%d events of %d bytes acked, then: %v; /readyz: %s", acked, len(event), refused, ready)
}
