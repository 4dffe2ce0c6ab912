package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// deliveredAttempts sums webhookd_delivery_attempts_total{outcome="success"}
// on one daemon's /metrics.
func deliveredAttempts(t *testing.T, d *daemon) float64 {
	t.Helper()
	raw := scrape(t, d)
	var sum float64
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(line, "webhookd_delivery_attempts_total{") && strings.Contains(line, `outcome="success"`) {
			var v float64
			if _, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v); err == nil {
				sum += v
			}
		}
	}
	return sum
}

// TestTwoInstancesShareTheWork: two webhookd processes on one nats-server,
// each with its own data dir. Subscriptions registered on one are served by
// both: every (event, subscription) pair arrives, both instances deliver,
// the other instance lists them, and a deletion through the other instance
// stops deliveries everywhere.
func TestTwoInstancesShareTheWork(t *testing.T) {
	if testing.Short() {
		t.Skip("two real daemons")
	}
	natsPort := freePort(t)
	startNATSProcess(t, natsPort, t.TempDir())
	url := fmt.Sprintf("nats://127.0.0.1:%d", natsPort)
	a, b := newDaemon(t), newDaemon(t)
	a.externalNATS, b.externalNATS = url, url
	a.start()
	b.start()

	l := newLedger()
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(time.Millisecond) // keep both instances' lanes busy
		l.handler(w, r)
	}))
	defer recv.Close()
	const subs, events = 3, 1000
	subscribe(t, a, l, recv.URL, subs) // registered on a only

	status, out := b.api(http.MethodGet, "/api/webhook", nil)
	var list struct {
		Data []struct{ ID, URL string }
	}
	if status != 200 || json.Unmarshal(out, &list) != nil || len(list.Data) != subs {
		t.Fatalf("b lists %d of a's %d subscriptions: %d %s", len(list.Data), subs, status, out)
	}

	publishEventsFrom(t, url, 0, events)
	waitUntil(t, 60*time.Second, "every pair delivered", func() bool { return l.unique() >= events*subs })
	da, db := deliveredAttempts(t, a), deliveredAttempts(t, b)
	t.Logf("two instances: %d pairs, lost 0, duplicates %d; a delivered %.0f, b %.0f", events*subs, l.dups, da, db)
	if da == 0 || db == 0 {
		t.Errorf("the work was not shared: a delivered %.0f, b %.0f", da, db)
	}
	l.check(t)

	// Delete the first subscription through b; no later event may reach it.
	gone := list.Data[0]
	if status, out := b.api(http.MethodDelete, "/api/webhook/"+gone.ID, nil); status != 200 && status != 204 {
		t.Fatalf("delete through b: %d %s", status, out)
	}
	if status, _ := a.api(http.MethodGet, "/api/webhook/"+gone.ID, nil); status != 404 {
		// The deletion reaches a through the shared registry within moments.
		waitUntil(t, 10*time.Second, "a to drop the deleted subscription", func() bool {
			s, _ := a.api(http.MethodGet, "/api/webhook/"+gone.ID, nil)
			return s == 404
		})
	}
	path := strings.TrimPrefix(gone.URL, recv.URL)
	publishEventsFrom(t, url, events, events)
	waitUntil(t, 60*time.Second, "the remaining subscriptions' deliveries", func() bool {
		return l.unique() >= events*subs+events*(subs-1)
	})
	time.Sleep(500 * time.Millisecond)
	l.mu.Lock()
	got := len(l.seen[path])
	l.mu.Unlock()
	if got != events {
		t.Errorf("the deleted subscription received %d events, want the %d sent before its deletion", got, events)
	}
}

// TestLocalRegistryWhenBucketEmpty: --registry-bucket "" keeps the
// registry local (no bucket is created) and deliveries still flow.
func TestLocalRegistryWhenBucketEmpty(t *testing.T) {
	d := newDaemon(t, "--registry-bucket", "")
	d.start()
	deliverSome(t, d, 10)

	js := d.jetStream()
	if _, err := js.KeyValue(t.Context(), "WEBHOOKD_REGISTRY"); !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Errorf("the shared-registry bucket exists or errs otherwise: %v", err)
	}
}
