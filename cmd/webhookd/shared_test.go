package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// These tests hold the shared registry to DESIGN §6 "One truth across
// instances", each with real nats-server processes and real daemons.

// sharedNATS starts one nats-server process and returns its URL.
func sharedNATS(t *testing.T) string {
	t.Helper()
	port := freePort(t)
	startNATSProcess(t, port, t.TempDir())
	return fmt.Sprintf("nats://127.0.0.1:%d", port)
}

// onNATS returns a daemon (not started) on the external server url.
func onNATS(t *testing.T, url string, extra ...string) *daemon {
	d := newDaemon(t, extra...)
	d.externalNATS = url
	return d
}

// launch starts d without waiting for /readyz, for instances that must
// not become ready.
func (d *daemon) launch() {
	d.t.Helper()
	d.cmd = exec.Command(binPath, d.args()...)
	d.cmd.Env = append(os.Environ(), d.env...)
	if d.logs == nil {
		d.logs = &syncBuffer{}
	}
	d.cmd.Stdout, d.cmd.Stderr = d.logs, d.logs
	if err := d.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	d.exited = make(chan error, 1)
	go func(c *exec.Cmd, ch chan error) { ch <- c.Wait() }(d.cmd, d.exited)
}

// readyz returns /readyz's status and its error reason (0 when nothing
// answers).
func (d *daemon) readyz() (int, string) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + d.httpAddr + "/readyz")
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	var env struct {
		Details struct{ Reason string }
	}
	_ = json.NewDecoder(resp.Body).Decode(&env)
	return resp.StatusCode, env.Details.Reason
}

// apiClient is safe for many goroutines (unlike daemon.api, which calls
// t.Fatal) and keeps enough idle connections for 64 concurrent clients.
var apiClient = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 128}}

func (d *daemon) tryAPI(method, path string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(context.Background(), method, "http://"+d.httpAddr+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("x-copy-ai-api-key", d.apiKey)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := apiClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	return resp.StatusCode, out, err
}

// tryRegister creates a webhook and returns its id and secret.
func (d *daemon) tryRegister(url, eventType, workflowID string) (id, secret string, err error) {
	body, _ := json.Marshal(map[string]string{"url": url, "eventType": eventType, "workflowId": workflowID})
	status, out, err := d.tryAPI(http.MethodPost, "/api/webhook", body)
	if err != nil {
		return "", "", err
	}
	if status != 200 {
		return "", "", fmt.Errorf("register: %d %s", status, out)
	}
	var env struct{ Data struct{ ID, Secret string } }
	if err := json.Unmarshal(out, &env); err != nil {
		return "", "", err
	}
	return env.Data.ID, env.Data.Secret, nil
}

// parallel runs fn(0..n-1) on conc goroutines and fails the test with the
// first error.
func parallel(t *testing.T, n, conc int, fn func(i int) error) {
	t.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, conc)
	for range conc {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				if err := fn(i); err != nil {
					errs <- fmt.Errorf("item %d: %w", i, err)
					next.Store(int64(n)) // stop the others
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
}

// listIDs pages through GET /api/webhook.
func listIDs(t *testing.T, d *daemon) []string {
	t.Helper()
	var ids []string
	cursor := ""
	for {
		path := "/api/webhook?limit=1000"
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		status, out := d.api(http.MethodGet, path, nil)
		var env struct {
			Data       []struct{ ID string }
			NextCursor string
		}
		if status != 200 || json.Unmarshal(out, &env) != nil {
			t.Fatalf("list: %d %s", status, out)
		}
		for _, w := range env.Data {
			ids = append(ids, w.ID)
		}
		if env.NextCursor == "" {
			return ids
		}
		cursor = env.NextCursor
	}
}

// metricSum adds every series of a metric family on d's /metrics (0 when
// the family is absent, as a labelled counter is before its first count).
func metricSum(t *testing.T, d *daemon, name string) float64 {
	t.Helper()
	var sum float64
	for _, line := range strings.Split(string(scrape(t, d)), "\n") {
		if strings.HasPrefix(line, name+"{") || strings.HasPrefix(line, name+" ") {
			v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			if err == nil {
				sum += v
			}
		}
	}
	return sum
}

// hitCounter is a receiver that counts requests per path.
type hitCounter struct {
	mu   sync.Mutex
	hits map[string]int
}

func (h *hitCounter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	if h.hits == nil {
		h.hits = map[string]int{}
	}
	h.hits[r.URL.Path]++
	h.mu.Unlock()
}

func (h *hitCounter) snapshot() map[string]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string]int, len(h.hits))
	for k, v := range h.hits {
		out[k] = v
	}
	return out
}

// TestCreateDeleteRaceTwoInstances: 2,000 create-then-delete pairs through
// A, 64 at a time, must leave nothing behind on A, on B, or on an instance
// that joins afterwards; and no later event reaches a deleted webhook.
func TestCreateDeleteRaceTwoInstances(t *testing.T) {
	if testing.Short() {
		t.Skip("two real daemons")
	}
	const pairs, clients, events = 2000, 64, 50
	url := sharedNATS(t)
	a, b := onNATS(t, url), onNATS(t, url)
	a.start()
	b.start()
	graveyard := &hitCounter{}
	grave := httptest.NewServer(graveyard)
	defer grave.Close()

	start := time.Now()
	parallel(t, pairs, clients, func(i int) error {
		// Deleted webhooks match the test events exactly: a resurrected
		// one would receive them.
		id, _, err := a.tryRegister(fmt.Sprintf("%s/deleted-%d", grave.URL, i), "workflowRun.completed", "")
		if err != nil {
			return err
		}
		status, out, err := a.tryAPI(http.MethodDelete, "/api/webhook/"+id, nil)
		if err != nil {
			return err
		}
		if status != 200 && status != 204 {
			return fmt.Errorf("delete %s: %d %s", id, status, out)
		}
		return nil
	})
	t.Logf("%d create-then-delete pairs through A with %d clients in %s", pairs, clients, time.Since(start).Round(time.Millisecond))

	if ids := listIDs(t, a); len(ids) != 0 {
		t.Errorf("A lists %d deleted webhooks right after deleting them, e.g. %v", len(ids), ids[:min(3, len(ids))])
	}
	var bIDs []string
	var bGauge float64
	settled := pollUntil(10*time.Second, func() bool {
		bIDs, bGauge = listIDs(t, b), metricValue(t, b, "webhookd_registrations")
		return len(bIDs) == 0 && bGauge == 0
	})
	if !settled {
		t.Errorf("B still lists %d deleted webhooks (webhookd_registrations %.0f) 10 s after the last deletion, e.g. %v",
			len(bIDs), bGauge, bIDs[:min(3, len(bIDs))])
	}
	// Nothing comes back later either, nor on an instance that joins now.
	c := onNATS(t, url)
	c.start()
	time.Sleep(time.Second)
	for name, d := range map[string]*daemon{"A": a, "B": b, "C (joined after)": c} {
		ids, gauge := listIDs(t, d), metricValue(t, d, "webhookd_registrations")
		t.Logf("%s: lists %d, webhookd_registrations %.0f", name, len(ids), gauge)
		if len(ids) != 0 || gauge != 0 {
			t.Errorf("%s lists %d webhooks (webhookd_registrations %.0f) after %d create-then-delete pairs", name, len(ids), gauge, pairs)
		}
	}

	// A control subscription proves the events were fanned out.
	l := newLedger()
	recv := httptest.NewServer(http.HandlerFunc(l.handler))
	defer recv.Close()
	subscribeAt(t, a, l, recv.URL, "/control")
	waitUntil(t, 10*time.Second, "B and C to have the control subscription", func() bool {
		return metricValue(t, b, "webhookd_registrations") == 1 && metricValue(t, c, "webhookd_registrations") == 1
	})
	publishEventsFrom(t, url, 0, events)
	waitUntil(t, 30*time.Second, "the control subscription's deliveries", func() bool { return l.unique() >= events })
	time.Sleep(time.Second)
	hits := graveyard.snapshot()
	n := 0
	for _, v := range hits {
		n += v
	}
	t.Logf("after %d events: the control got %d, the %d deleted webhooks got %d requests on %d paths", events, l.unique(), pairs, n, len(hits))
	if n != 0 {
		t.Errorf("deleted webhooks received %d requests on %d paths", n, len(hits))
	}
	l.check(t)
}

// pollUntil reports whether cond became true within limit.
func pollUntil(limit time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(limit)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestJoinLargeRegistryUnderLoad: A holds 20,000 subscriptions, one of
// which matches the events; while events flow, instance C joins with an
// empty data dir. C must not fan out before it has the whole registry, so
// every event reaches the one live subscription.
func TestJoinLargeRegistryUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("two real daemons, 60,001 subscriptions")
	}
	// The measurement: 60,001 subscriptions (1 live), 6,000 events
	// at 400/s, a new instance with an empty data dir 3 s into the stream.
	const subs, clients, events, rate = 60001, 64, 6000, 400
	url := sharedNATS(t)
	a := onNATS(t, url)
	a.start()
	never := &hitCounter{}
	idle := httptest.NewServer(never)
	defer idle.Close()
	start := time.Now()
	parallel(t, subs-1, clients, func(i int) error {
		// Same workspace, none matching: half another type, half another workflow.
		typ, wf := "workflowRun.completed", fmt.Sprintf("NOPE-%d", i)
		if i%2 == 0 {
			typ, wf = "workflowRun.failed", ""
		}
		_, _, err := a.tryRegister(fmt.Sprintf("%s/idle-%d", idle.URL, i), typ, wf)
		return err
	})
	// The live subscription comes last: the newest revision in the bucket.
	l := newLedger()
	recv := httptest.NewServer(http.HandlerFunc(l.handler))
	defer recv.Close()
	id, secret := a.register(recv.URL+"/live", "workflowRun.completed", "WF")
	v, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	l.verify["/live"] = v
	l.mu.Unlock()
	t.Logf("registered %d subscriptions on A in %s (live one %s last)", subs, time.Since(start).Round(time.Millisecond), id)

	pub := startPacedPublisher(t, url, 0, events, rate)
	time.Sleep(3 * time.Second)
	c := onNATS(t, url)
	joined, joinedAt := time.Now(), pub.acked.Load()
	c.launch()
	waitUntil(t, 30*time.Second, "C ready", func() bool { s, _ := c.readyz(); return s == 200 })
	readyIn := time.Since(joined)
	t.Logf("C joined %d events in, ready %s later with webhookd_registrations %.0f", joinedAt, readyIn.Round(time.Millisecond),
		metricValue(t, c, "webhookd_registrations"))
	if n := metricValue(t, c, "webhookd_registrations"); n != subs {
		t.Errorf("C ready with %.0f of %d subscriptions", n, subs)
	}
	pub.wait(t, 60*time.Second)
	pollUntil(30*time.Second, func() bool { return l.unique() >= events })
	time.Sleep(500 * time.Millisecond)
	got := l.unique()
	cFanned := metricSum(t, c, "webhookd_events_received_total")
	t.Logf("live subscription got %d/%d events, lost %d, duplicates %d; C fanned out %.0f events, A %.0f",
		got, events, events-got, l.dups, cFanned, metricSum(t, a, "webhookd_events_received_total"))
	if got < events {
		t.Errorf("lost %d of %d events while C joined", events-got, events)
	}
	if cFanned == 0 {
		t.Errorf("C fanned out no event: the test did not exercise the join")
	}
	if hits := never.snapshot(); len(hits) != 0 {
		t.Errorf("%d non-matching subscriptions received requests", len(hits))
	}
	l.check(t)
}

// TestReadYourWritesAcrossInstances: a webhook registered through A
// receives an event published right after A acknowledged it, when the
// fan-out happens on B only.
//
// A consumes its own subjects and streams (aevents.>, A_EVENTS,
// A_DELIVERIES on a.deliveries.>) but shares the registry bucket, so A's
// API writes the subscriptions B matches while A fans out nothing of B's.
func TestReadYourWritesAcrossInstances(t *testing.T) {
	if testing.Short() {
		t.Skip("two real daemons")
	}
	const rounds, maxLost = 300, 10
	url := sharedNATS(t)
	a := onNATS(t, url, "--subject-prefix", "aevents", "--events-stream", "A_EVENTS",
		"--deliveries-stream", "A_DELIVERIES", "--deliveries-subject", "a.deliveries")
	b := onNATS(t, url)
	a.start()
	b.start()
	l := newLedger()
	recv := httptest.NewServer(http.HandlerFunc(l.handler))
	defer recv.Close()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}

	var lost []int
	var slowest time.Duration
	start := time.Now()
	for i := 0; i < rounds && len(lost) <= maxLost; i++ {
		path, wf := fmt.Sprintf("/ryw-%d", i), fmt.Sprintf("RYW-%d", i)
		_, secret := a.register(recv.URL+path, "workflowRun.completed", wf)
		v, err := standardwebhooks.NewWebhook(secret)
		if err != nil {
			t.Fatal(err)
		}
		l.mu.Lock()
		l.verify[path] = v
		l.mu.Unlock()
		body := fmt.Sprintf(`{"type":"workflowRun.completed","workflowId":%q,"workflowRunId":"ryw-%d"}`, wf, i)
		sent := time.Now()
		if _, err := js.Publish(context.Background(), "events.acme.workflowRun.completed", []byte(body),
			jetstream.WithMsgID(fmt.Sprintf("ryw-%d", i))); err != nil {
			t.Fatal(err)
		}
		ok := pollUntil(3*time.Second, func() bool {
			l.mu.Lock()
			defer l.mu.Unlock()
			return len(l.seen[path]) == 1
		})
		if !ok {
			lost = append(lost, i)
			continue
		}
		slowest = max(slowest, time.Since(sent))
	}
	// A late arrival still counts; a lost one never comes.
	time.Sleep(time.Second)
	var stillLost []int
	l.mu.Lock()
	for _, i := range lost {
		if len(l.seen[fmt.Sprintf("/ryw-%d", i)]) == 0 {
			stillLost = append(stillLost, i)
		}
	}
	l.mu.Unlock()
	da, db := deliveredAttempts(t, a), deliveredAttempts(t, b)
	t.Logf("read-your-writes: %d rounds in %s, %d delivered, %d lost %v, slowest %s; A delivered %.0f, B %.0f; A fanned out %.0f events",
		rounds, time.Since(start).Round(time.Millisecond), l.unique(), len(stillLost), stillLost,
		slowest.Round(time.Millisecond), da, db, metricSum(t, a, "webhookd_events_received_total"))
	if len(stillLost) > 0 {
		t.Errorf("%d events published right after A acknowledged their webhook never reached it through B (rounds %v)", len(stillLost), stillLost)
	}
	if da != 0 || metricSum(t, a, "webhookd_events_received_total") != 0 {
		t.Errorf("A took part in fan-out or delivery (%.0f deliveries): the setup does not isolate B", da)
	}
	l.check(t)
}
