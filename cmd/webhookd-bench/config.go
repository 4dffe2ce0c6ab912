package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"
)

// errUsage marks a command-line mistake (exit status 2).
var errUsage = errors.New("usage")

// Config is one invocation of the bench. The zero value of every optional
// field means "the scenario's preset".
type Config struct {
	// Scenarios to run, in order (see presets).
	Scenarios []string
	// Events overrides the event count of the max-rate scenarios; the
	// fan-out ones divide it by their fan-out so every scenario delivers
	// about the same number of webhooks.
	Events int
	// Rate (events/s) and Duration override the paced scenarios' pacing.
	Rate     float64
	Duration time.Duration
	// Revive is how many of a deadhosts run's hanging hosts come back;
	// ReviveTimeout bounds the wait for them to catch up.
	Revive        int
	ReviveTimeout time.Duration
	// HangAfter is how long hanghostsN's bad hosts answer 204 before
	// they start hanging.
	HangAfter time.Duration
	// ChurnCycles and ChurnClients override churn's 100,000 cycles and
	// 32 clients; Settle the 10 s churn and failing1m wait before their
	// "after" figures.
	ChurnCycles, ChurnClients int
	Settle                    time.Duration
	// FailingHooks and FailingEvents override failing1m's 100 webhooks
	// and 10,000 events.
	FailingHooks, FailingEvents int
	// Subs is the registry size of subs1m (1,000,000 when only that
	// scenario is asked for by name; see defaultSubs).
	Subs int
	// BodyBytes is the size every event body is padded to.
	BodyBytes int
	// Window bounds the publishes awaiting their JetStream ack.
	Window int
	// RegisterWorkers is how many concurrent keep-alive registrations run.
	RegisterWorkers int
	// DrainIdle ends the wait for deliveries once none arrived for this
	// long; DrainTimeout caps the whole wait after the last publish ack.
	DrainIdle    time.Duration
	DrainTimeout time.Duration
	// BaselineConns forces the raw baseline's keep-alive connections per
	// receiver; 0 uses the most webhookd held open to one receiver.
	BaselineConns int
	// NoBaseline skips the raw baseline.
	NoBaseline bool
	// AllowLoss makes lost deliveries (not void runs) exit 0.
	AllowLoss bool

	// WebhookdBin is a prebuilt daemon; empty builds ./cmd/webhookd.
	WebhookdBin string
	// DaemonFlags are appended to every daemon the bench starts.
	DaemonFlags []string
	// Profile, when set and the bench starts the daemon, is the directory
	// that receives a 10 s CPU profile of each scenario.
	Profile string

	// API, NATSURL and APIKey target an already running webhookd instead.
	API, NATSURL, APIKey string
	// Workspace is the API key's workspace (events go to
	// <SubjectPrefix>.<Workspace>.<type>).
	Workspace     string
	SubjectPrefix string

	// JSON prints machine-readable output instead of the table.
	JSON bool
}

// External reports whether the bench targets a daemon it did not start.
func (c Config) External() bool { return c.API != "" }

// standardScenarios is what a run without --scenario does.
var standardScenarios = []string{"single", "fanout10", "steady", "mixed", "allhealthy", "subs1m"}

// defaultSubs is subs1m's registry size in the standard run. Registering
// through the API is the slow part (about 5,000/s on a 2-core machine, so
// a million take over three minutes on their own); the standard run
// registers 100,000, reports the projection for a million, and
// --scenario subs1m runs the full million.
const defaultSubs = 100_000

// stringList is a repeatable flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, " ") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// parseConfig reads the command line. Usage errors wrap errUsage.
func parseConfig(args []string, stderr io.Writer) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("webhookd-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	scen := fs.String("scenario", "", "comma-separated scenarios: "+strings.Join(presetNames(), ", ")+
		" (default: "+strings.Join(standardScenarios, ",")+", subs1m scaled to 100k subscriptions)")
	fs.IntVar(&c.Events, "events", 0, "events of the max-rate scenarios (single: 20000; fanoutN: 20000/N; subs1m: 10000)")
	fs.Float64Var(&c.Rate, "rate", 0, "events/s of steady (1000), steady5k (5000), mixed and allhealthy (100), deadhostsN, hanghostsN and their controls (100); failing1m (max rate)")
	fs.DurationVar(&c.Duration, "duration", 0, "length of steady and steady5k (30s), mixed and allhealthy (15s), deadhostsN, hanghostsN and their controls (60s)")
	fs.IntVar(&c.Revive, "revive", 0, "hanging hosts of deadhostsN and hanghostsN that come back after publishing (0: the preset, all 50 of deadhosts50 and hanghosts50, 25 of deadhosts500)")
	fs.DurationVar(&c.ReviveTimeout, "revive-timeout", defaultReviveTimeout, "stop waiting this long after the revival for the revived hosts to get every event")
	fs.DurationVar(&c.HangAfter, "hang-after", 0, "hanghostsN: how long the bad hosts answer 204 from the first publish before they hang (0: the preset, 10s)")
	fs.IntVar(&c.ChurnCycles, "churn-cycles", 0, "churn: create-then-delete cycles (0: the preset, 100000)")
	fs.IntVar(&c.ChurnClients, "churn-clients", 0, "churn: concurrent API clients (0: the preset, 32)")
	fs.DurationVar(&c.Settle, "settle", 0, "churn and failing1m: wait before the after figures, nothing forced (0: the preset, 10s)")
	fs.IntVar(&c.FailingHooks, "failing-webhooks", 0, "failing1m: webhooks answering 500 (0: the preset, 100)")
	fs.IntVar(&c.FailingEvents, "failing-events", 0, "failing1m: events, each to every webhook (0: the preset, 10000)")
	fs.IntVar(&c.Subs, "subs", 0, "registered subscriptions in subs1m (1000000 when asked for by name, else 100000)")
	fs.IntVar(&c.BodyBytes, "body-bytes", 512, "size every event body is padded to")
	fs.IntVar(&c.Window, "window", 1024, "publishes awaiting their JetStream ack at most")
	fs.IntVar(&c.RegisterWorkers, "register-workers", 64, "concurrent keep-alive registrations")
	fs.DurationVar(&c.DrainIdle, "drain-idle", 10*time.Second, "stop waiting once no delivery arrived for this long")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", 2*time.Minute, "stop waiting this long after the last publish ack at most")
	fs.IntVar(&c.BaselineConns, "baseline-conns", 0, "raw baseline keep-alive connections per receiver (0: as many as webhookd used)")
	fs.BoolVar(&c.NoBaseline, "no-baseline", false, "skip the raw loopback baseline")
	fs.BoolVar(&c.AllowLoss, "allow-loss", false, "exit 0 even when deliveries were lost (void runs still fail)")
	fs.StringVar(&c.WebhookdBin, "webhookd-bin", "", "webhookd binary to run (default: go build ./cmd/webhookd)")
	var daemonFlags stringList
	fs.Var(&daemonFlags, "daemon-flag", "extra flag for the started daemon, e.g. --daemon-flag=--max-conns-per-host=128 (repeatable)")
	fs.StringVar(&c.Profile, "profile", "", "directory for a 10 s CPU profile of the daemon per scenario (started daemon only)")
	fs.StringVar(&c.API, "api", "", "target a running webhookd: its API base URL (needs --nats-url and --api-key)")
	fs.StringVar(&c.NATSURL, "nats-url", "", "with --api: the NATS URL webhookd consumes from")
	fs.StringVar(&c.APIKey, "api-key", "", "with --api: an API key of --workspace")
	fs.StringVar(&c.Workspace, "workspace", "bench", "workspace of the API key")
	fs.StringVar(&c.SubjectPrefix, "subject-prefix", "events", "webhookd's --subject-prefix")
	fs.BoolVar(&c.JSON, "json", false, "print JSON instead of a table")
	if err := fs.Parse(args); err != nil {
		return c, fmt.Errorf("%w: %w", errUsage, err)
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	c.DaemonFlags = daemonFlags
	if *scen == "" {
		c.Scenarios = standardScenarios
		if c.Subs == 0 {
			c.Subs = defaultSubs
		}
	} else {
		names, err := parseScenarioList(*scen)
		if err != nil {
			return c, fmt.Errorf("%w: %w", errUsage, err)
		}
		c.Scenarios = names
		if c.Subs == 0 {
			c.Subs = 1_000_000
		}
	}
	return c, c.validate()
}

func (c Config) validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{errUsage}, a...)...)
	}
	switch {
	case c.Events < 0 || c.Rate < 0 || c.Duration < 0:
		return bad("--events, --rate and --duration must not be negative")
	case c.Revive < 0 || c.ReviveTimeout < 0 || c.HangAfter < 0:
		return bad("--revive, --revive-timeout and --hang-after must not be negative")
	case c.ChurnCycles < 0 || c.ChurnClients < 0 || c.Settle < 0 || c.FailingHooks < 0 || c.FailingEvents < 0:
		return bad("--churn-cycles, --churn-clients, --settle, --failing-webhooks and --failing-events must not be negative")
	case c.Subs < 3:
		return bad("--subs must be at least 3 (the subscriptions each event matches)")
	case c.BodyBytes < 0 || c.BodyBytes > 200<<10:
		return bad("--body-bytes must be between 0 and 200 KiB")
	case c.Window < 1 || c.RegisterWorkers < 1:
		return bad("--window and --register-workers must be at least 1")
	case c.DrainIdle <= 0 || c.DrainTimeout <= 0:
		return bad("--drain-idle and --drain-timeout must be positive")
	case c.BaselineConns < 0:
		return bad("--baseline-conns must not be negative")
	case c.External() && (c.NATSURL == "" || c.APIKey == ""):
		return bad("--api needs --nats-url and --api-key")
	case !c.External() && (c.NATSURL != "" || c.APIKey != ""):
		return bad("--nats-url and --api-key need --api")
	case c.External() && c.WebhookdBin != "":
		return bad("--webhookd-bin and --api exclude each other")
	case c.External() && len(c.DaemonFlags) > 0:
		return bad("--daemon-flag needs a daemon the bench starts (no --api)")
	case c.Workspace == "" || strings.ContainsAny(c.Workspace, ".*> \t"):
		return bad("--workspace must be a single NATS subject token")
	case c.SubjectPrefix == "" || strings.ContainsAny(c.SubjectPrefix, "*> \t"):
		return bad("--subject-prefix must be a plain subject prefix")
	}
	return nil
}

// parseScenarioList splits "a,b" into known preset names, refusing unknown
// and repeated ones.
func parseScenarioList(s string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, n := range strings.Split(s, ",") {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		if _, ok := presets[n]; !ok {
			return nil, fmt.Errorf("unknown scenario %q (known: %s)", n, strings.Join(presetNames(), ", "))
		}
		if seen[n] {
			return nil, fmt.Errorf("scenario %q given twice", n)
		}
		seen[n] = true
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, errors.New("no scenario named")
	}
	return out, nil
}
