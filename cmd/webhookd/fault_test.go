package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	bolt "go.etcd.io/bbolt"
)

// subscribe registers n subscriptions on one ledger-backed receiver.
func subscribe(t *testing.T, d *daemon, l *ledger, recvURL string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		subscribeAt(t, d, l, recvURL, fmt.Sprintf("/sub-%d", i))
	}
}

// subscribeAt registers recvURL+path and teaches the ledger its secret.
func subscribeAt(t *testing.T, d *daemon, l *ledger, recvURL, path string) (id string) {
	t.Helper()
	id, secret := d.register(recvURL+path, "workflowRun.completed", "")
	v, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	l.verify[path] = v
	l.mu.Unlock()
	return id
}

func (l *ledger) check(t *testing.T) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.badSig != 0 {
		t.Errorf("%d deliveries failed signature verification", l.badSig)
	}
	if l.mismatch != 0 {
		t.Errorf("%d duplicates differ in webhook-id or body", l.mismatch)
	}
}

// TestCrashAfter2xxBeforeAck: the process dies right after a receiver
// answered 2xx and before the ack; after a restart the delivery comes
// again with the same webhook-id and body. Both ways a delivery travels
// are covered: a new webhook's first delivery is stored as a job first; a
// healthy webhook's is made direct from its event, which stays unacked.
func TestCrashAfter2xxBeforeAck(t *testing.T) {
	for _, tc := range []struct {
		name string
		warm int // events delivered before the one the crash follows
	}{
		{"stored job", 0},
		{"direct delivery", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDaemon(t)
			d.env = []string{faultEnv + "=" + strconv.Itoa(tc.warm+1)}
			d.start()
			l := newLedger()
			recv := httptest.NewServer(http.HandlerFunc(l.handler))
			defer recv.Close()
			subscribe(t, d, l, recv.URL, 1)
			if tc.warm > 0 {
				publishEvents(t, d.natsURL(), tc.warm)
				waitUntil(t, 30*time.Second, "warm-up deliveries", func() bool { return l.unique() >= tc.warm })
			}
			publishEventsFrom(t, d.natsURL(), tc.warm, 1)
			select {
			case <-d.exited:
			case <-time.After(30 * time.Second):
				t.Fatal("fault hook did not fire")
			}
			if code := d.cmd.ProcessState.ExitCode(); code != 3 {
				t.Fatalf("exit code %d, want the fault hook's 3", code)
			}
			if l.unique() != tc.warm+1 {
				t.Fatalf("receiver saw %d deliveries before the crash, want %d", l.unique(), tc.warm+1)
			}
			d.env = nil
			restart := time.Now()
			d.start()
			waitUntil(t, 60*time.Second, "redelivery", func() bool {
				l.mu.Lock()
				defer l.mu.Unlock()
				return l.dups >= 1
			})
			t.Logf("crash between 2xx and ack: redelivered %s after restart with the same webhook-id", time.Since(restart).Round(time.Millisecond))
			l.check(t)
		})
	}
}

// TestKill9ThreeTimes: three kill -9 at random points of a 5,000 × 5 burst;
// every pair arrives, duplicates are identical, and bbolt is consistent.
func TestKill9ThreeTimes(t *testing.T) {
	if testing.Short() {
		t.Skip("fault suite")
	}
	const events, subs = 5000, 5
	want := events * subs
	d := newDaemon(t)
	d.start()
	l := newLedger()
	recv := httptest.NewServer(http.HandlerFunc(l.handler))
	defer recv.Close()
	subscribe(t, d, l, recv.URL, subs)
	publishEvents(t, d.natsURL(), events)
	start := time.Now()
	var recoveries []time.Duration
	for kill := 0; kill < 3; kill++ {
		at := l.unique() + want/10 + rand.IntN(want/10)
		waitUntil(t, 90*time.Second, "progress before kill", func() bool { return l.unique() >= min(at, want-1) })
		d.kill9()
		d.start()
		recoveries = append(recoveries, 0)
	}
	restart := time.Now()
	waitUntil(t, 180*time.Second, "every pair delivered", func() bool { return l.unique() >= want })
	recoveries[2] = time.Since(restart)
	if code, _ := d.term(30 * time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM", code)
	}
	checkBolt(t, filepath.Join(d.dataDir, "webhookd.db"))
	l.mu.Lock()
	t.Logf("kill -9 ×3: %d pairs, lost 0, %d requests, %d duplicates, total %s, last recovery %s",
		want, l.total, l.dups, time.Since(start).Round(time.Millisecond), recoveries[2].Round(time.Millisecond))
	l.mu.Unlock()
	l.check(t)
}

// checkBolt runs bbolt's own consistency check on a closed database.
func checkBolt(t *testing.T, path string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			t.Errorf("bbolt check: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

var (
	natsServerOnce sync.Once
	natsServerBin  string
	natsServerErr  error
)

// natsServerBinary builds nats-server from the module version pinned in
// go.mod, so the fault suite needs nothing but Go.
func natsServerBinary(t *testing.T) string {
	t.Helper()
	natsServerOnce.Do(func() {
		natsServerBin = filepath.Join(filepath.Dir(binPath), "nats-server")
		out, err := exec.Command("go", "build", "-o", natsServerBin, "github.com/nats-io/nats-server/v2").CombinedOutput()
		if err != nil {
			natsServerErr = fmt.Errorf("build nats-server: %v\n%s", err, out)
		}
	})
	if natsServerErr != nil {
		t.Fatal(natsServerErr)
	}
	return natsServerBin
}

// natsProcess is a separate nats-server that the test can kill.
type natsProcess struct {
	t      *testing.T
	port   int
	store  string
	cmd    *exec.Cmd
	exited chan struct{}
}

func startNATSProcess(t *testing.T, port int, store string) *natsProcess {
	t.Helper()
	n := &natsProcess{t: t, port: port, store: store}
	n.start()
	t.Cleanup(func() {
		if n.cmd.ProcessState == nil {
			_ = n.cmd.Process.Kill()
			<-n.exited
		}
	})
	return n
}

func (n *natsProcess) start() {
	n.t.Helper()
	n.cmd = exec.Command(natsServerBinary(n.t), "-a", "127.0.0.1", "-p", strconv.Itoa(n.port), "-js", "-sd", n.store)
	if err := n.cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	n.exited = make(chan struct{})
	go func(c *exec.Cmd, ch chan struct{}) { _ = c.Wait(); close(ch) }(n.cmd, n.exited)
	waitUntil(n.t, 20*time.Second, "nats-server listening", func() bool {
		return dialOK(fmt.Sprintf("127.0.0.1:%d", n.port))
	})
}

func (n *natsProcess) signal(sig syscall.Signal) {
	n.t.Helper()
	_ = n.cmd.Process.Signal(sig)
	select {
	case <-n.exited:
	case <-time.After(30 * time.Second):
		n.t.Fatalf("nats-server did not exit on %v", sig)
	}
}

// TestNATSOutages: webhookd on a separate nats-server survives the server's
// graceful restart and its kill -9: it reconnects by itself, /readyz goes red
// then green, and every delivery arrives.
func TestNATSOutages(t *testing.T) {
	if testing.Short() {
		t.Skip("fault suite")
	}
	natsPort := freePort(t)
	ns := startNATSProcess(t, natsPort, t.TempDir())
	d := newDaemon(t)
	d.externalNATS = fmt.Sprintf("nats://127.0.0.1:%d", natsPort)
	d.start()
	l := newLedger()
	// A little receiver latency keeps deliveries in flight across the outage.
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(2 * time.Millisecond)
		l.handler(w, r)
	}))
	defer recv.Close()
	const subs = 3
	subscribe(t, d, l, recv.URL, subs)

	publishEventsFrom(t, d.natsURL(), 0, 1500)
	waitUntil(t, 60*time.Second, "deliveries flowing", func() bool { return l.unique() >= 500 })

	// 1. Graceful restart of nats-server mid-stream.
	ns.signal(syscall.SIGTERM)
	red := time.Now()
	waitUntil(t, 20*time.Second, "/readyz red while NATS is down", func() bool { return d.readyStatus() == 503 })
	ns.start()
	waitUntil(t, 60*time.Second, "/readyz green after NATS is back", func() bool { return d.readyStatus() == 200 })
	t.Logf("nats-server SIGTERM+restart: /readyz green %s after the stop", time.Since(red).Round(time.Millisecond))

	publishEventsFrom(t, d.natsURL(), 1500, 1500)
	waitUntil(t, 60*time.Second, "more deliveries", func() bool { return l.unique() >= 3000 })

	// 2. kill -9 of nats-server.
	ns.signal(syscall.SIGKILL)
	red = time.Now()
	waitUntil(t, 20*time.Second, "/readyz red after kill -9", func() bool { return d.readyStatus() == 503 })
	ns.start()
	waitUntil(t, 60*time.Second, "/readyz green again", func() bool { return d.readyStatus() == 200 })
	t.Logf("nats-server kill -9+restart: /readyz green %s after the kill", time.Since(red).Round(time.Millisecond))

	// The shared registry's watch survived both outages: a deletion made
	// by "another instance" (straight in the bucket) reaches this one.
	id, _ := d.register(recv.URL+"/after-outages", "workflowRun.failed", "")
	watchSeesRemoteDelete(t, d, id)

	waitUntil(t, 120*time.Second, "every pair delivered", func() bool { return l.unique() >= 3000*subs })
	l.mu.Lock()
	t.Logf("NATS outages: %d pairs, lost 0, duplicates %d", 3000*subs, l.dups)
	l.mu.Unlock()
	l.check(t)
	if code, _ := d.term(30 * time.Second); code != 0 {
		t.Errorf("exit code %d", code)
	}
}

func dialOK(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// watchSeesRemoteDelete deletes id in the shared-registry bucket, as
// another instance would, and waits for d's API to stop finding it.
func watchSeesRemoteDelete(t *testing.T, d *daemon, id string) {
	t.Helper()
	js := d.jetStream()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, "WEBHOOKD_REGISTRY")
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "the watch to apply a remote deletion", func() bool {
		status, _ := d.api(http.MethodGet, "/api/webhook/"+id, nil)
		return status == http.StatusNotFound
	})
}
