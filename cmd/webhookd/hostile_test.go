package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// metricValue reads one sample from the daemon's /metrics.
func metricValue(t *testing.T, d *daemon, name string) float64 {
	t.Helper()
	for _, l := range strings.Split(string(scrape(t, d)), "\n") {
		if strings.HasPrefix(l, name+" ") {
			v, _ := strconv.ParseFloat(strings.Fields(l)[1], 64)
			return v
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

func peakRSSMiB(pid int) float64 {
	raw, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			kb, _ := strconv.ParseFloat(strings.Fields(l)[1], 64)
			return kb / 1024
		}
	}
	return 0
}

type failureRecord struct {
	Attempts   int
	LastStatus int
	LastError  string
	Reason     string
}

func (d *daemon) failures(id string) []failureRecord {
	d.t.Helper()
	status, body := d.api(http.MethodGet, "/api/webhook/"+id+"/failures", nil)
	if status != 200 {
		d.t.Fatalf("failures: %d %s", status, body)
	}
	var env struct{ Data []failureRecord }
	_ = json.Unmarshal(body, &env)
	return env.Data
}

// TestHostileReceivers: receivers that hang, drip, flood, bomb or redirect
// cost one timed-out attempt each, never memory or goroutines, and a
// redirect is never followed.
func TestHostileReceivers(t *testing.T) {
	if testing.Short() {
		t.Skip("fault suite")
	}
	d := newDaemon(t, "--delivery-timeout", "1s", "--retry-max-attempts", "2", "--retry-initial", "1s", "--retry-max-interval", "1s")
	d.start()
	baseline := metricValue(t, d, "go_goroutines")

	stop := make(chan struct{})
	var floodBytes, otherHits atomic.Int64
	never := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-stop:
		}
	}))
	drip := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Headers one byte a second: hijack and write slowly.
		conn, buf, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_ = buf.Flush()
		for _, b := range []byte("HTTP/1.1 200 OK\r\nX-Slow: yes\r\n\r\n") {
			if _, err := conn.Write([]byte{b}); err != nil {
				return
			}
			select {
			case <-time.After(time.Second):
			case <-stop:
				return
			}
		}
	}))
	flood := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := make([]byte, 64<<10)
		for sent := 0; sent < 1<<30; sent += len(chunk) {
			n, err := w.Write(chunk)
			floodBytes.Add(int64(n))
			if err != nil {
				return
			}
		}
	}))
	var bomb bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&bomb, gzip.BestCompression)
	_, _ = zw.Write(make([]byte, 200<<20)) // 200 MiB of zeros, ~200 KiB compressed
	_ = zw.Close()
	gzipBomb := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Encoding", "gzip")
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(bomb.Bytes())
	}))
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { otherHits.Add(1) }))
	redirMeta := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://169.254.169.254/latest/meta-data/", http.StatusFound)
	}))
	redirOther := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL, http.StatusTemporaryRedirect)
	}))
	servers := []*httptest.Server{never, drip, flood, gzipBomb, other, redirMeta, redirOther}
	defer func() {
		close(stop)
		for _, s := range servers {
			s.CloseClientConnections()
			s.Close()
		}
	}()

	ids := map[string]string{}
	for name, s := range map[string]*httptest.Server{"never": never, "drip": drip, "flood": flood, "gzip": gzipBomb,
		"redirMeta": redirMeta, "redirOther": redirOther} {
		id, _ := d.register(s.URL+"/"+name, "workflowRun.completed", "")
		ids[name] = id
	}
	publishEvents(t, d.natsURL(), 1)

	for _, name := range []string{"never", "drip", "redirMeta", "redirOther"} {
		waitUntil(t, 30*time.Second, name+" failure recorded", func() bool { return len(d.failures(ids[name])) == 1 })
		f := d.failures(ids[name])[0]
		switch name {
		case "never", "drip":
			if f.Attempts != 2 || f.LastStatus != 0 || !strings.Contains(strings.ToLower(f.LastError), "timeout") && !strings.Contains(f.LastError, "deadline") {
				t.Errorf("%s: failure %+v, want 2 timed-out attempts", name, f)
			}
		default:
			if f.LastStatus < 300 || f.LastStatus > 399 {
				t.Errorf("%s: failure %+v, want a 3xx", name, f)
			}
		}
	}
	if otherHits.Load() != 0 {
		t.Errorf("a redirect was followed: the other receiver was hit %d times", otherHits.Load())
	}
	// The flood and the gzip bomb answer 200 and count as delivered.
	waitUntil(t, 30*time.Second, "flood and gzip deliveries", func() bool {
		return metricValue(t, d, `webhookd_delivery_attempts_total{event_type="workflowRun.completed",outcome="success",status_class="2xx"}`) >= 2
	})
	if n := floodBytes.Load(); n > 64<<20 {
		t.Errorf("the flooding receiver pushed %d MiB into webhookd", n>>20)
	}
	rss := peakRSSMiB(d.cmd.Process.Pid)
	if rss > 150 {
		t.Errorf("peak RSS %.0f MiB after a 1 GiB flood and a 200 MiB gzip bomb", rss)
	}
	// Goroutines return to baseline once the hostile attempts are over.
	var now float64
	deadline := time.Now().Add(30 * time.Second)
	for {
		now = metricValue(t, d, "go_goroutines")
		if now <= baseline+20 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if now > baseline+20 {
		t.Errorf("goroutines %v, baseline %v", now, baseline)
	}
	t.Logf("hostile receivers: flood wrote %d KiB before webhookd hung up; peak RSS %.0f MiB; goroutines %v (baseline %v)",
		floodBytes.Load()>>10, rss, now, baseline)
}

// TestTLSVerifiedAndCAFile: a self-signed receiver fails by default and
// works once its CA is given with --ca-file.
func TestTLSVerifiedAndCAFile(t *testing.T) {
	var hits atomic.Int64
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer tlsSrv.Close()

	d := newDaemon(t, "--retry-max-attempts", "1")
	d.start()
	id, _ := d.register(tlsSrv.URL+"/hook", "workflowRun.completed", "")
	publishEvents(t, d.natsURL(), 1)
	waitUntil(t, 20*time.Second, "TLS failure recorded", func() bool { return len(d.failures(id)) == 1 })
	if f := d.failures(id)[0]; !strings.Contains(f.LastError, "certificate") {
		t.Errorf("failure %+v does not mention the certificate", f)
	}
	if hits.Load() != 0 {
		t.Error("the untrusted receiver got a request")
	}

	caFile := filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tlsSrv.Certificate().Raw})
	if err := os.WriteFile(caFile, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	d2 := newDaemon(t, "--ca-file", caFile)
	d2.start()
	d2.register(tlsSrv.URL+"/hook", "workflowRun.completed", "")
	publishEvents(t, d2.natsURL(), 1)
	waitUntil(t, 20*time.Second, "delivery over TLS with --ca-file", func() bool { return hits.Load() == 1 })
}

// TestHangingHostCappedAndHealthyServed: one hanging and one healthy
// receiver on different hosts, 1,000 events each: the healthy one gets
// everything, and connections to the hanging host never exceed the cap.
func TestHangingHostCappedAndHealthyServed(t *testing.T) {
	if testing.Short() {
		t.Skip("fault suite")
	}
	const cap, events = 8, 1000
	d := newDaemon(t, "--max-conns-per-host", strconv.Itoa(cap), "--delivery-timeout", "3s")
	d.start()

	var open, peak atomic.Int64
	var mu sync.Mutex
	stop := make(chan struct{})
	lnHang, err := net.Listen("tcp", "127.0.0.2:0") // another loopback host: its own lane
	if err != nil {
		t.Skipf("127.0.0.2 not usable: %v", err)
	}
	hang := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-stop:
		}
	}), ConnState: func(_ net.Conn, s http.ConnState) {
		mu.Lock()
		defer mu.Unlock()
		switch s {
		case http.StateNew:
			if n := open.Add(1); n > peak.Load() {
				peak.Store(n)
			}
		case http.StateClosed, http.StateHijacked:
			open.Add(-1)
		}
	}}
	go func() { _ = hang.Serve(lnHang) }()
	defer func() { close(stop); hang.Close() }()

	l := newLedger()
	healthy := httptest.NewServer(http.HandlerFunc(l.handler))
	defer healthy.Close()
	subscribe(t, d, l, healthy.URL, 1)
	d.register("http://"+lnHang.Addr().String()+"/hook", "workflowRun.completed", "")
	start := time.Now()
	publishEvents(t, d.natsURL(), events)
	waitUntil(t, 60*time.Second, "healthy receiver gets every event", func() bool { return l.unique() >= events })
	t.Logf("healthy receiver got %d events in %s next to a hanging host; peak connections to the hanging host %d (cap %d)",
		events, time.Since(start).Round(time.Millisecond), peak.Load(), cap)
	if peak.Load() > cap {
		t.Errorf("%d connections to the hanging host, cap %d", peak.Load(), cap)
	}
	l.check(t)
}
