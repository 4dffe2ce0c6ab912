package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// clusterNode is one nats-server of a JetStream cluster built from the
// pinned module, which the test can kill -9 and restart on the same ports
// and store.
type clusterNode struct {
	t           *testing.T
	name        string // server name, as StreamInfo().Cluster.Leader reports it
	port        int
	clusterPort int
	store       string
	routes      string
	cmd         *exec.Cmd
	exited      chan struct{}
	out         *syncBuffer
}

// startNATSCluster starts n routed nats-servers with JetStream and waits
// until the cluster can place an n-replica stream.
func startNATSCluster(t *testing.T, n int) []*clusterNode {
	t.Helper()
	var nodes []*clusterNode
	// A port picked free can be taken by another test's process before the
	// server binds it (the packages' tests run in parallel): then the whole
	// cluster is started again on fresh ports.
	for attempt := 1; ; attempt++ {
		var err error
		if nodes, err = tryCluster(t, n); err == nil {
			break
		}
		if attempt == 3 {
			t.Fatal(err)
		}
		t.Logf("starting the NATS cluster failed, retrying on fresh ports: %v", err)
	}
	nc, err := nats.Connect(clusterURLs(nodes))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitUntil(t, 30*time.Second, "the cluster to place an R3 stream", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "PROBE", Subjects: []string{"probe.>"},
			Replicas: n, Storage: jetstream.MemoryStorage}); err != nil {
			return false
		}
		return js.DeleteStream(ctx, "PROBE") == nil
	})
	t.Logf("%d-node JetStream cluster ready in %s", n, time.Since(start).Round(time.Millisecond))
	return nodes
}

// tryCluster starts n routed nodes, or stops them all and says why not.
func tryCluster(t *testing.T, n int) ([]*clusterNode, error) {
	nodes := make([]*clusterNode, n)
	routes := make([]string, n)
	for i := range nodes {
		nodes[i] = &clusterNode{t: t, name: fmt.Sprintf("n%d", i), port: freePort(t), clusterPort: freePort(t), store: t.TempDir()}
		routes[i] = fmt.Sprintf("nats://127.0.0.1:%d", nodes[i].clusterPort)
	}
	for i, c := range nodes {
		c.routes = strings.Join(routes, ",")
		if err := c.tryStart(); err != nil {
			for _, started := range nodes[:i+1] {
				started.stop()
			}
			return nil, err
		}
		t.Cleanup(c.stop)
	}
	return nodes, nil
}

func (c *clusterNode) stop() {
	if c.cmd != nil && c.cmd.Process != nil && c.cmd.ProcessState == nil {
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
}

// start (re)starts the node on its ports; the test fails if it cannot.
func (c *clusterNode) start() {
	c.t.Helper()
	if err := c.tryStart(); err != nil {
		c.t.Fatal(err)
	}
}

func (c *clusterNode) tryStart() error {
	c.out = &syncBuffer{}
	c.cmd = exec.Command(natsServerBinary(c.t), "-a", "127.0.0.1", "-p", strconv.Itoa(c.port), "-n", c.name,
		"-js", "-sd", c.store, "--cluster", fmt.Sprintf("nats://127.0.0.1:%d", c.clusterPort),
		"--routes", c.routes, "--cluster_name", "webhookd-test")
	c.cmd.Stdout, c.cmd.Stderr = c.out, c.out
	if err := c.cmd.Start(); err != nil {
		return err
	}
	c.exited = make(chan struct{})
	go func(cmd *exec.Cmd, ch chan struct{}) { _ = cmd.Wait(); close(ch) }(c.cmd, c.exited)
	deadline := time.Now().Add(60 * time.Second)
	for !dialOK(fmt.Sprintf("127.0.0.1:%d", c.port)) {
		select {
		case <-c.exited:
			return fmt.Errorf("nats-server %s exited before listening: %s", c.name, tail(c.out.String(), 600))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			c.stop()
			return fmt.Errorf("nats-server %s not listening on %d after 60 s: %s", c.name, c.port, tail(c.out.String(), 600))
		}
	}
	return nil
}

func (c *clusterNode) kill9() {
	c.t.Helper()
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-c.exited:
	case <-time.After(10 * time.Second):
		c.t.Fatalf("nats-server %s survived kill -9", c.name)
	}
}

func clusterURLs(nodes []*clusterNode) string {
	urls := make([]string, len(nodes))
	for i, c := range nodes {
		urls[i] = fmt.Sprintf("nats://127.0.0.1:%d", c.port)
	}
	return strings.Join(urls, ",")
}

// streamLeader names the server leading a stream's RAFT group ("" while
// there is none).
func streamLeader(js jetstream.JetStream, stream string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return ""
	}
	info, err := s.Info(ctx)
	if err != nil || info.Cluster == nil {
		return ""
	}
	return info.Cluster.Leader
}

// pacedPublisher publishes the standard test events (run-<i>, workflowId
// WF, on events.acme.workflowRun.completed) at a steady rate, and keeps
// re-publishing each one (same Nats-Msg-Id, so the server dedupes) until
// JetStream acknowledges it: a leader election may fail or time out a
// publish, it must not lose an event the test then waits for.
type pacedPublisher struct {
	acked, retries atomic.Int64
	done           chan struct{}
	mu             sync.Mutex
	failed         []error
}

func startPacedPublisher(t *testing.T, urls string, from, n, rate int) *pacedPublisher {
	t.Helper()
	nc, err := nats.Connect(urls, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(256), jetstream.WithPublishAsyncTimeout(3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	p := &pacedPublisher{done: make(chan struct{})}
	t.Cleanup(func() {
		select {
		case <-p.done:
		case <-time.After(90 * time.Second):
		}
		nc.Close()
	})
	type pending struct {
		i   int
		fut jetstream.PubAckFuture
	}
	queue := make(chan pending, n)
	const subject = "events.acme.workflowRun.completed"
	body := func(i int) []byte {
		return fmt.Appendf(nil, `{"type":"workflowRun.completed","workflowId":"WF","workflowRunId":"run-%d"}`, i)
	}
	go func() {
		defer close(p.done)
		for q := range queue {
			if q.fut != nil {
				select {
				case <-q.fut.Ok():
					p.acked.Add(1)
					continue
				case <-q.fut.Err():
				}
			}
			// Synchronous re-publish until acknowledged, bounded.
			deadline := time.Now().Add(60 * time.Second)
			for {
				p.retries.Add(1)
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				_, err := js.Publish(ctx, subject, body(q.i), jetstream.WithMsgID(fmt.Sprintf("run-%d", q.i)))
				cancel()
				if err == nil {
					p.acked.Add(1)
					break
				}
				if time.Now().After(deadline) {
					p.mu.Lock()
					p.failed = append(p.failed, fmt.Errorf("run-%d: %w", q.i, err))
					p.mu.Unlock()
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	}()
	go func() {
		defer close(queue)
		start := time.Now()
		for i := from; i < from+n; i++ {
			if d := time.Until(start.Add(time.Duration(i-from) * time.Second / time.Duration(rate))); d > 0 {
				time.Sleep(d)
			}
			fut, err := js.PublishAsync(subject, body(i), jetstream.WithMsgID(fmt.Sprintf("run-%d", i)))
			if err != nil {
				fut = nil // re-published synchronously
			}
			queue <- pending{i: i, fut: fut}
		}
	}()
	return p
}

// wait returns once every event is acknowledged (or given up on, which
// fails the test).
func (p *pacedPublisher) wait(t *testing.T, limit time.Duration) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(limit):
		t.Fatalf("publisher not done after %s (%d acked)", limit, p.acked.Load())
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.failed) > 0 {
		t.Fatalf("%d events never acknowledged by JetStream, e.g. %v", len(p.failed), errors.Join(p.failed[:min(3, len(p.failed))]...))
	}
}

// TestClusterKillLeaderAndInstances: three webhookd instances on a
// three-node JetStream cluster with R3 streams. While events flow, the
// node leading the deliveries stream is killed -9, then two of the three
// instances are; then everything is restarted. Every (event,
// subscription) pair still arrives at least once.
func TestClusterKillLeaderAndInstances(t *testing.T) {
	if testing.Short() {
		t.Skip("NATS cluster fault test")
	}
	// The measurement: 5 subscriptions, 5,000 events at 500/s
	// (25,000 deliveries); kill -9 of the deliveries stream's leader at
	// 3 s, of two of the three instances at 5 s and 7 s (mid-burst), then
	// the node and all three instances restarted at 12 s.
	const events, subs, rate = 5000, 5, 500
	want := events * subs
	nodes := startNATSCluster(t, 3)
	urls := clusterURLs(nodes)
	ds := make([]*daemon, 3)
	for i := range ds {
		ds[i] = newDaemon(t, "--stream-replicas", "3")
		ds[i].externalNATS = urls
		ds[i].start()
	}
	l := newLedger()
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(20 * time.Millisecond) // keep deliveries in flight across the kills
		l.handler(w, r)
	}))
	defer recv.Close()
	subscribe(t, ds[0], l, recv.URL, subs)
	// This test is about crashes, not about registry propagation: let
	// every instance have the subscriptions before the first event.
	var have []float64
	if !pollUntil(10*time.Second, func() bool {
		have = have[:0]
		for _, d := range ds {
			have = append(have, metricValue(t, d, "webhookd_registrations"))
		}
		return !slices.ContainsFunc(have, func(n float64) bool { return n != subs })
	}) {
		t.Fatalf("10 s after registering %d subscriptions on instance 1, the instances have %v", subs, have)
	}

	// An observer that reconnects at once, so that the election time it
	// reports is the cluster's, not the client's reconnect wait.
	onc, err := nats.Connect(urls, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer onc.Close()
	obs, err := jetstream.New(onc)
	if err != nil {
		t.Fatal(err)
	}
	leader := streamLeader(obs, "WEBHOOKD_DELIVERIES")
	var victim *clusterNode
	for _, c := range nodes {
		if c.name == leader {
			victim = c
		}
	}
	if victim == nil {
		t.Fatalf("deliveries stream leader %q is none of the nodes", leader)
	}
	t.Logf("deliveries stream leader: %s; events stream leader: %s", leader, streamLeader(obs, "WEBHOOKD_EVENTS"))

	start := time.Now()
	at := func(d time.Duration) { time.Sleep(time.Until(start.Add(d))) }
	inflight := func(d *daemon) float64 {
		return metricValue(t, d, "webhookd_deliveries_inflight") + metricValue(t, d, "webhookd_deliveries_probation_inflight")
	}
	pub := startPacedPublisher(t, urls, 0, events, rate)
	at(3 * time.Second)
	victim.kill9()
	killedAt := time.Now()
	t.Logf("kill -9 of %s (deliveries leader) at %s, %d pairs delivered", victim.name, killedAt.Sub(start).Round(time.Millisecond), l.unique())
	var election sync.WaitGroup
	defer election.Wait()
	election.Go(func() {
		if pollUntil(30*time.Second, func() bool {
			nl := streamLeader(obs, "WEBHOOKD_DELIVERIES")
			return nl != "" && nl != victim.name
		}) {
			t.Logf("a new deliveries leader was elected within %s of the kill", time.Since(killedAt).Round(time.Millisecond))
		}
	})
	for i, when := range []time.Duration{5 * time.Second, 7 * time.Second} {
		at(when)
		d := ds[i+1]
		n := inflight(d)
		d.kill9()
		t.Logf("kill -9 of instance %d at %s (%.0f attempts in flight in it), %d events acknowledged, %d pairs delivered",
			i+2, time.Since(start).Round(time.Millisecond), n, pub.acked.Load(), l.unique())
	}
	at(12 * time.Second)
	n := inflight(ds[0])
	ds[0].kill9()
	t.Logf("kill -9 of instance 1 at %s (%.0f attempts in flight in it): all three restart", time.Since(start).Round(time.Millisecond), n)
	victim.start()
	for _, d := range ds {
		d.start()
	}
	restarted := time.Now()
	t.Logf("%s and the three instances restarted and ready at %s, %d pairs delivered", victim.name, restarted.Sub(start).Round(time.Millisecond), l.unique())

	pub.wait(t, 60*time.Second)
	t.Logf("publisher: %d/%d events acknowledged, %d re-publishes", pub.acked.Load(), events, pub.retries.Load())
	deadline := time.Now().Add(120 * time.Second)
	for l.unique() < want && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	got := l.unique()
	l.mu.Lock()
	total, dups := l.total, l.dups
	l.mu.Unlock()
	t.Logf("cluster kill test: %d/%d pairs delivered, lost %d, %d requests, %d duplicates; all in %s after the restarts (total %s)",
		got, want, want-got, total, dups, time.Since(restarted).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	if got < want {
		t.Errorf("lost %d of %d (event, subscription) pairs", want-got, want)
	}
	l.check(t)
}
