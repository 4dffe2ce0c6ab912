package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// daemonBin builds webhookd once for the end-to-end tests, or skips.
func daemonBin(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end: builds and runs webhookd (skipped with -short)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin, err := buildDaemon(ctx, t.TempDir())
	if err != nil {
		t.Skipf("end-to-end: cannot build cmd/webhookd, so there is no daemon to measure: %v", err)
	}
	return bin
}

// runBench runs the tool with --json and decodes its report.
func runBench(t *testing.T, args ...string) (report, int, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	code := realMain(ctx, append(args, "--json"), &out, &errOut)
	var rep report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("exit %d, output is not JSON (%v):\n%s\nstderr:\n%s", code, err, out.String(), errOut.String())
	}
	return rep, code, errOut.String()
}

func checkClean(t *testing.T, r Result, events, fanout int) {
	t.Helper()
	tl := r.Tally
	if r.Void || tl.Published != events || tl.Expected != int64(events*fanout) || tl.Unique != tl.Expected || tl.Lost != 0 {
		t.Fatalf("%s: void %v %v, ledger %+v", r.Scenario, r.Void, r.VoidReasons, tl)
	}
	if r.PerSecond <= 0 || r.Latency.Count != uint64(tl.Unique) || r.Latency.P50 <= 0 || r.Latency.Max < r.Latency.P99 {
		t.Fatalf("%s: throughput %v latency %+v", r.Scenario, r.PerSecond, r.Latency)
	}
}

func TestEndToEndSingle(t *testing.T) {
	bin := daemonBin(t)
	prof := filepath.Join(t.TempDir(), "prof")
	rep, code, stderr := runBench(t, "--webhookd-bin", bin, "--scenario", "single", "--events", "300",
		"--drain-idle", "30s", "--profile", prof)
	if code != 0 || len(rep.Scenarios) != 1 {
		t.Fatalf("exit %d, %d results; stderr:\n%s", code, len(rep.Scenarios), stderr)
	}
	r := rep.Scenarios[0]
	checkClean(t, r, 300, 1)
	if r.CPUSeconds == nil || *r.CPUSeconds <= 0 || r.PeakRSSMiB == nil || *r.PeakRSSMiB <= 0 {
		t.Errorf("CPU %v RSS %v: the bench started the daemon, both must be measured", r.CPUSeconds, r.PeakRSSMiB)
	}
	if r.Baseline == nil || r.Baseline.Requests != 300 || r.Ratio == nil || *r.Ratio <= 0 || rep.Headline == nil {
		t.Errorf("baseline %+v ratio %v headline %+v", r.Baseline, r.Ratio, rep.Headline)
	}
	if fi, err := os.Stat(filepath.Join(prof, "single.cpu.pprof")); err != nil || fi.Size() == 0 || r.Profile == "" {
		t.Errorf("CPU profile: %v (%q)", err, r.Profile)
	}
}

func TestEndToEndRegistryRestartAndUnhealthy(t *testing.T) {
	bin := daemonBin(t)
	rep, code, stderr := runBench(t, "--webhookd-bin", bin, "--scenario", "subs1m,mixed", "--subs", "200",
		"--events", "90", "--rate", "20", "--duration", "2s", "--no-baseline", "--drain-idle", "30s")
	if code != 0 || len(rep.Scenarios) != 2 {
		t.Fatalf("exit %d, %d results; stderr:\n%s", code, len(rep.Scenarios), stderr)
	}
	subs, mixed := rep.Scenarios[0], rep.Scenarios[1]
	checkClean(t, subs, 30, 3)
	if subs.Registration == nil || subs.Registration.Subs != 197 || subs.Restart == nil || subs.Restart.ReadySeconds <= 0 {
		t.Errorf("registration %+v restart %+v", subs.Registration, subs.Restart)
	}
	checkClean(t, mixed, 40, 18)
	if len(mixed.Unhealthy) != 2 || mixed.Unhealthy[1].Behaviour != "failing" || mixed.Unhealthy[1].EventsSeen == 0 {
		t.Errorf("unhealthy endpoints: %+v", mixed.Unhealthy)
	}
}

// TestEndToEndExternal targets a daemon the bench did not start: no CPU
// or memory figures, and its subscriptions are removed afterwards.
func TestEndToEndExternal(t *testing.T) {
	bin := daemonBin(t)
	d, err := startDaemon(context.Background(), daemonConfig{Bin: bin})
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	rep, code, stderr := runBench(t, "--api", d.target.api, "--nats-url", d.target.natsURL, "--api-key", d.target.apiKey,
		"--scenario", "fanout10", "--events", "200", "--no-baseline", "--drain-idle", "30s")
	if code != 0 || len(rep.Scenarios) != 1 {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr)
	}
	r := rep.Scenarios[0]
	checkClean(t, r, 20, 10)
	if r.CPUSeconds != nil || r.PeakRSSMiB != nil {
		t.Errorf("external daemon: CPU %v RSS %v must be n/a", r.CPUSeconds, r.PeakRSSMiB)
	}
	var buf bytes.Buffer
	if err := (report{Scenarios: rep.Scenarios}).writeTable(&buf); err != nil || !strings.Contains(buf.String(), "n/a") {
		t.Errorf("table must say n/a:\n%s", buf.String())
	}
	req, _ := http.NewRequest(http.MethodGet, d.target.api+"/api/webhook", nil)
	req.Header.Set("x-copy-ai-api-key", d.target.apiKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list struct{ Data []json.RawMessage }
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil || len(list.Data) != 0 {
		t.Errorf("%d subscriptions left behind (%v)", len(list.Data), err)
	}
}

// TestEndToEndChurnAndFailing runs both API-side scenarios small: every
// churned webhook is gone, and every failing delivery is given up once.
func TestEndToEndChurnAndFailing(t *testing.T) {
	bin := daemonBin(t)
	rep, code, stderr := runBench(t, "--webhookd-bin", bin, "--scenario", "churn,failing1m", "--churn-cycles", "300",
		"--churn-clients", "8", "--settle", "1s", "--failing-webhooks", "5", "--failing-events", "20", "--drain-idle", "30s")
	if code != 0 || len(rep.Scenarios) != 2 || rep.Failed {
		t.Fatalf("exit %d, %d results, failed %v; stderr:\n%s", code, len(rep.Scenarios), rep.Failed, stderr)
	}
	c := rep.Scenarios[0].Churn
	if c == nil || c.Cycles != 300 || c.PerSecond <= 0 || c.After.Registrations == nil || *c.After.Registrations != 0 ||
		c.Before.Goroutines == nil || c.After.Goroutines == nil || c.PeakRSSMiB == nil || c.After.RSSMiB == nil {
		t.Errorf("churn: %+v", c)
	}
	f := rep.Scenarios[1].Failing
	if f == nil || f.Expected != 100 || f.GaveUp == nil || *f.GaveUp != 100 || f.ByReason["max_attempts"] != 100 || f.Distinct != 100 ||
		f.List == nil || f.List.Webhooks != 5 || f.List.MinLen != 20 || f.List.MaxLen != 20 || f.List.Errors != 0 || len(f.Streams) == 0 {
		t.Errorf("failing1m: %+v list %+v", f, f.List)
	}
}
