// Command webhookd-bench is webhookd's black-box load tool.
//
// It starts webhookd itself (built once from ./cmd/webhookd, or
// --webhookd-bin; embedded NATS on a free port, fresh data dir per
// scenario) or targets a running one (--api, --nats-url, --api-key). It
// registers subscriptions pointing at its own loopback receivers, publishes
// events through JetStream with acks, as fast as an ack window allows or on
// a fixed schedule, verifies every signature, dedupes by webhook-id and by
// (event, subscription), and reports deliveries/s, publish-to-receipt
// latency percentiles, lost and duplicate deliveries, webhookd's CPU
// seconds and peak RSS, and a raw baseline: the same receivers hit straight
// by a keep-alive net/http client, whose ratio to webhookd is the headline.
//
// Every run keeps a ledger: published × fan-out = received + lost. A run
// whose ledger does not balance, or with a bad signature, a changed body
// or an unstable webhook-id, is void.
//
//	go run ./cmd/webhookd-bench                       # standard scenarios, < 3 min
//	go run ./cmd/webhookd-bench --scenario subs1m     # the full million
//	go run ./cmd/webhookd-bench --scenario single,fanout100 --json
//	go run ./cmd/webhookd-bench --scenario churn --churn-cycles 2000   # API create/delete churn
//	go run ./cmd/webhookd-bench --scenario failing1m                   # a million given-up deliveries
//
// Exit status: 0 all good; 1 a scenario failed to run, failed a check
// (churn: registrations left; failing1m: not all given up, an unbounded
// failure list) or is void; 2 usage;
// 3 deliveries were lost (unless --allow-loss).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := realMain(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func realMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := parseConfig(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "webhookd-bench:", err)
		return 2
	}
	began := time.Now()
	b := &bench{cfg: cfg, log: stderr}
	switch {
	case cfg.External():
		b.external = &target{api: strings.TrimRight(cfg.API, "/"), natsURL: cfg.NATSURL, apiKey: cfg.APIKey,
			workspace: cfg.Workspace, prefix: cfg.SubjectPrefix}
		if cfg.Profile != "" {
			fmt.Fprintln(stderr, "webhookd-bench: --profile ignored: the daemon is not the bench's own")
			b.cfg.Profile = ""
		}
	case cfg.WebhookdBin != "":
		b.bin = cfg.WebhookdBin
	default:
		dir, err := os.MkdirTemp("", "webhookd-bench-bin-")
		if err != nil {
			fmt.Fprintln(stderr, "webhookd-bench:", err)
			return 1
		}
		defer os.RemoveAll(dir)
		fmt.Fprintln(stderr, "building cmd/webhookd ...")
		if b.bin, err = buildDaemon(ctx, dir); err != nil {
			fmt.Fprintln(stderr, "webhookd-bench:", err)
			return 1
		}
	}
	if b.cfg.Profile != "" {
		if err := os.MkdirAll(b.cfg.Profile, 0o755); err != nil {
			fmt.Fprintln(stderr, "webhookd-bench: --profile:", err)
			return 1
		}
	}

	var results []Result
	failed := false
	for _, s := range plan(cfg) {
		fmt.Fprintf(stderr, "%s: %s ...\n", s.Name, s.About)
		res, err := b.run(ctx, s)
		if ctx.Err() != nil {
			fmt.Fprintln(stderr, "webhookd-bench: interrupted")
			return 1
		}
		if err != nil {
			fmt.Fprintf(stderr, "webhookd-bench: %s: %v\n", s.Name, err)
			failed = true
			continue
		}
		fmt.Fprintln(stderr, res.progressLine())
		results = append(results, res)
	}
	rep := newReport(results)
	if cfg.JSON {
		err = rep.writeJSON(stdout)
	} else {
		err = rep.writeTable(stdout)
	}
	if err != nil {
		fmt.Fprintln(stderr, "webhookd-bench:", err)
		return 1
	}
	fmt.Fprintf(stderr, "total %.0f s\n", time.Since(began).Seconds())
	switch {
	case failed || rep.Void || rep.Failed:
		return 1
	case rep.Lost && !cfg.AllowLoss:
		fmt.Fprintln(stderr, "webhookd-bench: deliveries were lost (see the table); --allow-loss to exit 0 anyway")
		return 3
	}
	return 0
}
