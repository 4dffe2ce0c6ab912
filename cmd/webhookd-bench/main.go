// Command webhookd-bench is webhookd's black-box load tool. It starts
// webhookd (embedded NATS, temp data dir) or targets a running one,
// registers subscriptions pointing at its own receivers, publishes events
// through JetStream with acks, verifies every signature, and reports
// throughput, publish-to-receive latency, losses, duplicates, and the
// daemon's CPU per delivery and peak memory, next to a raw HTTP baseline
// of the same receivers.
//
//	go run ./cmd/webhookd-bench                      # the standard scenarios
//	go run ./cmd/webhookd-bench --scenario single,fanout100 --json
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

type bench struct {
	bin       string
	external  *target
	bodyBytes int
	profile   string
}

func (b *bench) target(flags []string) (*target, error) {
	if b.external != nil {
		return b.external, nil
	}
	return startDaemon(b.bin, flags)
}

func (b *bench) release(t *target) {
	if t != b.external {
		t.stop()
	}
}

func main() { os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr)) }

func realMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("webhookd-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	scenarios := fs.String("scenario", "baseline,single,fanout10,steady,mixed,subs1m",
		"comma-separated: baseline, single, fanout10, fanout100, steady, mixed, subs1m")
	events := fs.Int("events", 20000, "events for the max-rate scenarios (single; fanout10 uses events/5, fanout100 events/50)")
	rate := fs.Float64("rate", 1000, "events/s of the steady scenario")
	duration := fs.Duration("duration", 15*time.Second, "length of the steady scenario")
	subs := fs.Int("subs", 100000, "registered subscriptions in subs1m (use 1000000 for the full run)")
	bodyBytes := fs.Int("body-bytes", 512, "approximate event size")
	bin := fs.String("webhookd-bin", "", "webhookd binary (default: go build ./cmd/webhookd)")
	api := fs.String("api", "", "target a running webhookd at this API URL instead of starting one")
	natsURL := fs.String("nats-url", "", "with --api: its NATS URL")
	apiKey := fs.String("api-key", "", "with --api: an API key for workspace \"bench\"")
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	b := &bench{bodyBytes: *bodyBytes}
	if *api != "" {
		if *natsURL == "" || *apiKey == "" {
			fmt.Fprintln(stderr, "webhookd-bench: --api needs --nats-url and --api-key")
			return 2
		}
		b.external = &target{api: strings.TrimRight(*api, "/"), natsURL: *natsURL, apiKey: *apiKey}
	} else if *bin != "" {
		b.bin = *bin
	} else {
		dir, err := os.MkdirTemp("", "webhookd-bench")
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		if b.bin, err = buildDaemon(dir); err != nil {
			fmt.Fprintln(stderr, "webhookd-bench:", err)
			return 1
		}
	}

	var results []result
	var raw float64
	void := false
	for _, name := range strings.Split(*scenarios, ",") {
		name = strings.TrimSpace(name)
		fmt.Fprintf(stderr, "running %s ...\n", name)
		if name == "baseline" {
			var err error
			if raw, err = baseline(3*time.Second, 64, *bodyBytes); err != nil {
				fmt.Fprintln(stderr, "webhookd-bench: baseline:", err)
				return 1
			}
			continue
		}
		s, err := scenario(name, *events, *rate, *duration, *subs)
		if err != nil {
			fmt.Fprintln(stderr, "webhookd-bench:", err)
			return 2
		}
		r, err := b.run(s)
		if err != nil {
			fmt.Fprintf(stderr, "webhookd-bench: %s: %v\n", name, err)
			return 1
		}
		if s.compareHealthy {
			h := s
			h.healthy, h.hanging, h.failing, h.compareHealthy = h.healthy+h.hanging+h.failing, 0, 0, false
			hr, err := b.run(h)
			if err != nil {
				fmt.Fprintf(stderr, "webhookd-bench: %s (all healthy): %v\n", name, err)
				return 1
			}
			r.HealthyP99 = hr.P99ms
			r.Note = fmt.Sprintf("healthy receivers' p99 %.1f ms vs %.1f ms with every receiver healthy (%.2fx)",
				r.P99ms, hr.P99ms, r.P99ms/max(hr.P99ms, 0.001))
		}
		void = void || r.Void || r.Lost > 0
		results = append(results, r)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(map[string]any{"rawBaselinePerSecond": raw, "results": results})
	} else {
		printTable(stdout, raw, results)
	}
	if void {
		fmt.Fprintln(stderr, "webhookd-bench: a run lost deliveries or is void (see above)")
		return 1
	}
	return 0
}

func scenario(name string, events int, rate float64, duration time.Duration, subs int) (spec, error) {
	steadyEvents := int(rate * duration.Seconds())
	switch name {
	case "single":
		return spec{name: name, events: events, healthy: 1, subsPerRecv: 1}, nil
	case "fanout10":
		return spec{name: name, events: max(events/5, 1), healthy: 10, subsPerRecv: 1}, nil
	case "fanout100":
		return spec{name: name, events: max(events/50, 1), healthy: 10, subsPerRecv: 10}, nil
	case "steady":
		return spec{name: name, events: steadyEvents, rate: rate, healthy: 1, subsPerRecv: 1}, nil
	case "mixed":
		// 10 receivers: one hangs, one answers 500, eight are healthy.
		return spec{name: name, events: steadyEvents / 2, rate: rate / 2, healthy: 8, hanging: 1, failing: 1,
			subsPerRecv: 1, compareHealthy: true, daemonFlags: []string{"--retry-initial", "1s", "--retry-max-interval", "2s"}}, nil
	case "subs1m":
		return spec{name: name, events: max(events/4, 1), healthy: 1, subsPerRecv: 3, cold: subs, restart: true}, nil
	}
	return spec{}, errors.New("unknown scenario " + name)
}

func printTable(w io.Writer, raw float64, rs []result) {
	if raw > 0 {
		fmt.Fprintf(w, "raw baseline (keep-alive POSTs straight to the receiver, 64 concurrent): %.0f req/s\n\n", raw)
	}
	fmt.Fprintf(w, "%-10s %7s %6s %8s %9s %8s %8s %8s %8s %8s %5s %5s %8s %8s\n",
		"scenario", "events", "fanout", "deliv", "deliv/s", "p50 ms", "p90 ms", "p99 ms", "p99.9", "max ms", "lost", "dups", "cpu ms/d", "RSS MiB")
	for _, r := range rs {
		fmt.Fprintf(w, "%-10s %7d %6d %8d %9.0f %8.1f %8.1f %8.1f %8.1f %8.1f %5d %5d %8.3f %8.0f\n",
			r.Name, r.Events, r.Fanout, r.Received, r.PerSecond, r.P50ms, r.P90ms, r.P99ms, r.P999ms, r.MaxMs, r.Lost, r.Duplicates, r.CPUms, r.PeakRSSMiB)
	}
	fmt.Fprintln(w)
	for _, r := range rs {
		if r.Name == "single" && raw > 0 {
			fmt.Fprintf(w, "single: webhookd/raw = %.2f\n", r.PerSecond/raw)
		}
		if r.Note != "" {
			fmt.Fprintf(w, "%s: %s\n", r.Name, r.Note)
		}
		if r.StartupSecs > 0 {
			fmt.Fprintf(w, "%s: restart with the registry loaded took %.2f s to /readyz\n", r.Name, r.StartupSecs)
		}
		if r.Void {
			fmt.Fprintf(w, "%s: VOID: %s\n", r.Name, r.VoidReason)
		}
	}
}
