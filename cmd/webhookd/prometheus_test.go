package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// needTool finds a binary from Debian's prometheus package. Locally a
// missing tool skips the test; in CI (CI=true) it fails, because .ci/run
// installs the package first.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not installed; .ci/run should have installed Debian's prometheus package", name)
		}
		t.Skipf("%s not installed (apt-get install prometheus)", name)
	}
	return p
}

func scrape(t *testing.T, d *daemon) []byte {
	t.Helper()
	resp, err := http.Get("http://" + d.httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return b
}

// TestLiveMetrics: /metrics of a running daemon lints clean with promtool
// and carries every metric family deploy/ (alerts, dashboard) relies on.
func TestLiveMetrics(t *testing.T) {
	promtool := needTool(t, "promtool")
	d := newDaemon(t)
	d.start()
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	defer recv.Close()
	d.register(recv.URL, "workflowRun.completed", "")
	publishEvents(t, d.natsURL(), 5)
	body := scrape(t, d)

	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
	f, err := os.Open(filepath.Join("..", "..", "deploy", "metrics.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name := strings.TrimSpace(sc.Text())
		if name == "" || strings.HasPrefix(name, "#") {
			continue
		}
		if !bytes.Contains(body, []byte("# TYPE "+name+" ")) {
			t.Errorf("deploy/metrics.txt names %s, but the live /metrics has no such family", name)
		}
	}
}

// TestPrometheusScrapesDeliveries runs Debian's prometheus against a live
// webhookd and checks that the delivery counters it scraped match what the
// receiver saw.
func TestPrometheusScrapesDeliveries(t *testing.T) {
	prom := needTool(t, "prometheus")
	d := newDaemon(t)
	d.start()
	var got atomic.Int64
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { got.Add(1) }))
	defer recv.Close()
	const events, subs = 200, 2
	for i := 0; i < subs; i++ {
		d.register(fmt.Sprintf("%s/s%d", recv.URL, i), "workflowRun.completed", "")
	}

	dir := t.TempDir()
	promAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg := fmt.Sprintf("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: webhookd\n    static_configs:\n      - targets: ['%s']\n", d.httpAddr)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := exec.Command(prom, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+promAddr)
	var plog syncBuffer
	p.Stdout, p.Stderr = &plog, &plog
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = p.Process.Kill(); _ = p.Wait() }()

	publishEvents(t, d.natsURL(), events)
	waitUntil(t, 60*time.Second, "all deliveries", func() bool { return got.Load() >= int64(events*subs) })
	q := `sum(webhookd_delivery_attempts_total{outcome="success"})`
	var last float64
	waitUntilOr(t, 60*time.Second, func() bool {
		v, ok := promQuery(promAddr, q)
		last = v
		return ok && v == float64(got.Load())
	}, func() string {
		return fmt.Sprintf("Prometheus says %s = %v, receiver saw %d\n%s", q, last, got.Load(), tail(plog.String(), 2000))
	})
	jobs, _ := promQuery(promAddr, `sum(webhookd_delivery_jobs_created_total)`)
	if jobs != events*subs {
		t.Errorf("scraped delivery_jobs_created_total = %v, want %d", jobs, events*subs)
	}
	t.Logf("Prometheus scraped %v successful deliveries; the receiver saw %d", last, got.Load())
}

func promQuery(addr, q string) (float64, bool) {
	resp, err := http.Get("http://" + addr + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	var r struct {
		Status string
		Data   struct {
			Result []struct {
				Value []any
			}
		}
	}
	if json.NewDecoder(resp.Body).Decode(&r) != nil || r.Status != "success" || len(r.Data.Result) != 1 || len(r.Data.Result[0].Value) != 2 {
		return 0, false
	}
	s, _ := r.Data.Result[0].Value[1].(string)
	v, err := strconv.ParseFloat(s, 64)
	return v, err == nil
}

func waitUntilOr(t *testing.T, limit time.Duration, cond func() bool, why func() string) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(why())
		}
		time.Sleep(200 * time.Millisecond)
	}
}
