package apikeys_test

import (
	"context"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/webhookd/webhookd/events/natstest"
	"github.com/webhookd/webhookd/registry/apikeys"
)

// TestWatchRestartsAfterReconnect: when the connection drops, the index
// keeps answering; after the reconnect the watch replays the bucket into a
// fresh index, and what changed meanwhile — a revocation, a purge, a new
// key — is in effect.
func TestWatchRestartsAfterReconnect(t *testing.T) {
	ns := natstest.JetStream(t)
	c := newClock()
	nc, js := natstest.Connect(t, ns.ClientURL(), nats.ReconnectWait(50*time.Millisecond))
	a, err := apikeys.New(apikeys.Config{JetStream: js, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = a.Run(ctx) })
	defer func() { cancel(); wg.Wait() }()
	waitFor(t, 10*time.Second, "load", func() bool { return a.Ready() == nil })

	writer := start(t, ns, c)
	k1, err := writer.store.Create(t.Context(), "acme", 0)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := writer.store.Create(t.Context(), "acme", 0)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, propagation, "A to see both keys", func() bool {
		return resolves(a, k1.Key, "acme")() && resolves(a, k2.Key, "acme")()
	})

	cid, err := nc.GetClientID()
	if err != nil {
		t.Fatal(err)
	}
	if err := ns.DisconnectClientByID(cid); err != nil {
		t.Fatal(err)
	}
	if _, err := writer.store.Revoke(t.Context(), k1.Record.ID); err != nil {
		t.Fatal(err)
	}
	kv, err := writer.js.KeyValue(t.Context(), apikeys.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Purge(t.Context(), k2.Record.ID); err != nil {
		t.Fatal(err)
	}
	k3, err := writer.store.Create(t.Context(), "acme", 0)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "A to apply the changes made around its reconnect", func() bool {
		return refused(a, k1.Key)() && refused(a, k2.Key)() && resolves(a, k3.Key, "acme")()
	})
	if a.Ready() != nil || !a.Issued("acme") {
		t.Fatal("the store lost its index across the reconnect")
	}
}

// clientGoroutines counts the goroutines that are not the in-process NATS
// server's (which starts and stops its own as streams and consumers come
// and go), and returns their stacks.
func clientGoroutines() (int, string) {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	var mine []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "nats-io/nats-server/v2/") {
			continue
		}
		n++
		mine = append(mine, g)
	}
	return n, strings.Join(mine, "\n\n")
}

// TestRunLeavesNoGoroutine: Run returns when its context ends and takes
// everything it started (its own and the NATS client's) with it.
func TestRunLeavesNoGoroutine(t *testing.T) {
	ns := natstest.JetStream(t)
	_, js := connect(t, ns)
	// The first JetStream request opens the connection's shared reply
	// subscription, which lives as long as the connection: open it first.
	if _, err := js.AccountInfo(t.Context()); err != nil {
		t.Fatal(err)
	}
	before, _ := clientGoroutines()
	s, err := apikeys.New(apikeys.Config{JetStream: js})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = s.Run(ctx) })
	waitFor(t, 10*time.Second, "load", func() bool { return s.Ready() == nil })
	if _, err := s.Create(t.Context(), "acme", 0); err != nil {
		t.Fatal(err)
	}
	cancel()
	wg.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, stacks := clientGoroutines()
		if n <= before {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("goroutines outside the server: %d before, %d after\n%s", before, n, stacks)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
