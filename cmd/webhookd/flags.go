package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/webhookd/webhookd/dispatcher/capacity"
	"github.com/webhookd/webhookd/events/natsconn"
	"github.com/webhookd/webhookd/registry/api"
)

// options is everything the command line and environment say. It lives only
// in main's stack: each package receives its own Config built from it.
type options struct {
	httpAddr       string
	dataDir        string
	natsURL        string
	natsListen     string
	subjectPrefix  string
	apiKeys        string
	keysBucket     string
	trustedProxies string
	fwdHeader      string
	allowPrivate   bool
	allowCIDRs     string
	caFile         string
	deliveryTO     time.Duration
	directDeadline time.Duration
	logLevel       string
	logFormat      string
	retryInitial   time.Duration
	retryMaxIvl    time.Duration
	retryMaxAge    time.Duration
	retryMaxTries  int
	maxConnsHost   int
	maxEventBytes  int
	eventRetention time.Duration
	replicas       int
	eventsStream   string
	delivStream    string
	delivSubject   string
	fanoutCons     string
	registryBucket string
	deliverCons    string
	syncAlways     bool
	pprofAddr      string
	adminAddr      string
	publicDebug    bool
	// secretFlags names the secrets given as command-line flags, which any
	// local user can read from the process list; run warns about them.
	secretFlags    []string
	encryptionKey  string
	healthBucket   string
	tombstoneGrace time.Duration
	// Storage.
	natsMaxStore   int64
	natsMaxMemory  int64
	natsMaxPayload int
	maxDeliveries  int
	// Shared failure records.
	failuresStream   string
	failuresPerHook  int
	failureRetention time.Duration
	attemptsStream   string
	attemptsPerHook  int
	attemptRetention time.Duration
	replayRate       float64
	disableAfter     time.Duration
	disableOnGone    bool
	cbFailures       int
	cbTimeouts       int
	cbCooldown       time.Duration
	cbMaxCooldown    time.Duration

	natsName     string
	natsCreds    string
	natsNKey     string
	natsUser     string
	natsPassword string
	natsToken    string
	natsTLSCA    string
	natsTLSCert  string
	natsTLSKey   string
}

const envPrefix = "WEBHOOKD_"

// envName is the environment twin of a flag: --retry-max-age ->
// WEBHOOKD_RETRY_MAX_AGE.
func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func newFlagSet(o *options, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("webhookd", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&o.httpAddr, "http-addr", "127.0.0.1:8080", "address of the management API, /healthz, /readyz and /metrics")
	fs.StringVar(&o.dataDir, "data-dir", "./data", "directory for the bbolt registry and the embedded NATS store")
	fs.StringVar(&o.natsURL, "nats-url", "", "external NATS server(s), comma-separated; empty starts an embedded server")
	fs.Int64Var(&o.natsMaxStore, "nats-max-store", natsconn.DefaultMaxStore, "bytes of JetStream storage webhookd may use: the embedded server's max store, or with --nats-url what webhookd's streams are budgeted from (per replica); split between the streams as README's Storage section says")
	fs.Int64Var(&o.natsMaxMemory, "nats-max-memory", natsconn.DefaultMaxMemory, "the embedded server's JetStream memory storage cap (webhookd keeps no stream in memory)")
	fs.IntVar(&o.natsMaxPayload, "nats-max-payload", natsconn.DefaultMaxPayload, "the embedded server's largest message, headers included; --max-event-bytes must stay 16 KiB below it")
	fs.IntVar(&o.maxDeliveries, "max-deliveries", 50, "times JetStream may hand out one delivery job without it being settled before it is recorded as failed (max_deliveries)")
	fs.StringVar(&o.natsListen, "nats-listen", "127.0.0.1:4222", "client address of the embedded NATS server")
	fs.StringVar(&o.subjectPrefix, "subject-prefix", "events", "events arrive on <prefix>.<workspaceId>.<eventType>")
	fs.StringVar(&o.apiKeys, "api-keys", "", "API keys as workspace:key,workspace:key (empty: a bootstrap key is created)")
	fs.StringVar(&o.keysBucket, "keys-bucket", "WEBHOOKD_KEYS", "JetStream key-value bucket of the API keys managed with 'webhookd keys', shared by every instance (empty: only --api-keys and the bootstrap key)")
	fs.StringVar(&o.trustedProxies, "trusted-proxies", "", "comma-separated CIDRs or IPs of load balancers/proxies whose --forwarded-header names the client, for the failed-authentication limits (empty: never read)")
	fs.StringVar(&o.fwdHeader, "forwarded-header", "X-Forwarded-For", "header the --trusted-proxies set: X-Forwarded-For or Forwarded")
	fs.BoolVar(&o.allowPrivate, "allow-private-targets", false, "allow webhook URLs on loopback/private/link-local addresses (development only)")
	fs.StringVar(&o.allowCIDRs, "allow-target-cidrs", "", "comma-separated private CIDRs webhooks may target despite the SSRF guard")
	fs.StringVar(&o.caFile, "ca-file", "", "PEM file of extra CAs trusted for HTTPS deliveries (system roots stay trusted)")
	fs.DurationVar(&o.deliveryTO, "delivery-timeout", 15*time.Second, "time limit of one delivery attempt")
	fs.DurationVar(&o.directDeadline, "direct-deadline", time.Second, "how long an event waits for the first attempts of its healthy webhooks, made straight from it with no job stored, before storing them as jobs; 0: every delivery is stored as a job first")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&o.logFormat, "log-format", "text", "text or json")
	fs.DurationVar(&o.retryInitial, "retry-initial", 5*time.Second, "delay before the first retry")
	fs.DurationVar(&o.retryMaxIvl, "retry-max-interval", 4*time.Hour, "longest delay between two attempts")
	fs.DurationVar(&o.retryMaxAge, "retry-max-age", 72*time.Hour, "give up on a delivery this long after its first attempt")
	fs.IntVar(&o.retryMaxTries, "retry-max-attempts", 0, "give up after this many attempts in all (0: bounded by age only)")
	fs.IntVar(&o.maxConnsHost, "max-conns-per-host", 64, "concurrent deliveries to one destination host")
	fs.IntVar(&o.maxEventBytes, "max-event-bytes", 256<<10, "largest event accepted; larger ones are counted and dropped")
	fs.DurationVar(&o.eventRetention, "event-retention", 7*24*time.Hour, "how long the events stream keeps an event once fanned out (the replay window); an event not yet fanned out is kept however old")
	fs.IntVar(&o.replicas, "stream-replicas", 1, "JetStream replicas for webhookd's streams (clustered NATS)")
	fs.StringVar(&o.eventsStream, "events-stream", "WEBHOOKD_EVENTS", "JetStream stream that captures events")
	fs.StringVar(&o.delivStream, "deliveries-stream", "WEBHOOKD_DELIVERIES", "JetStream stream holding delivery jobs and scheduled retries")
	fs.StringVar(&o.delivSubject, "deliveries-subject", "webhookd.deliveries", "subject root of the deliveries stream (must not overlap the event subjects)")
	fs.StringVar(&o.registryBucket, "registry-bucket", "WEBHOOKD_REGISTRY", "JetStream key-value bucket through which all instances share the subscriptions (empty: keep them local to this instance)")
	fs.DurationVar(&o.tombstoneGrace, "registry-tombstone-grace", 24*time.Hour, "how long a deleted subscription's marker stays in the shared registry before it is compacted; an instance away for more than half of it re-reads the whole registry on return")
	fs.StringVar(&o.failuresStream, "failures-stream", "WEBHOOKD_FAILURES", "JetStream stream through which all instances share failure records (empty: keep them in this instance's bbolt)")
	fs.IntVar(&o.failuresPerHook, "failures-per-webhook", 100, "failure records kept per webhook, oldest dropped (1 to 10000); in the shared stream or, without one, in bbolt")
	fs.DurationVar(&o.failureRetention, "failure-retention", 30*24*time.Hour, "how long a failure record is kept, in the shared stream or, without one, in bbolt")
	fs.StringVar(&o.attemptsStream, "delivery-log-stream", "WEBHOOKD_ATTEMPTS", "JetStream stream of the delivery log, every attempt of every delivery, shared by all instances (empty: no delivery log)")
	fs.IntVar(&o.attemptsPerHook, "delivery-log-per-webhook", 1000, "delivery attempts kept per webhook, oldest dropped (1 to 100000)")
	fs.DurationVar(&o.attemptRetention, "delivery-log-retention", 7*24*time.Hour, "how long a delivery attempt is kept in the delivery log")
	fs.Float64Var(&o.replayRate, "replay-rate", 100, "deliveries per second one replay job queues at most")
	fs.StringVar(&o.healthBucket, "health-bucket", "WEBHOOKD_HEALTH", "JetStream key-value bucket through which all instances share endpoint health and open circuits (empty: keep them local to this instance)")
	fs.DurationVar(&o.disableAfter, "disable-after", 5*24*time.Hour, "disable a webhook whose deliveries have failed without a single success for this long (0: never)")
	fs.BoolVar(&o.disableOnGone, "disable-on-gone", true, "disable a webhook whose receiver answers 410 Gone")
	fs.IntVar(&o.cbFailures, "circuit-failures", 5, "consecutive failed attempts that open a webhook's circuit")
	fs.IntVar(&o.cbTimeouts, "circuit-timeouts", 2, "consecutive timed-out attempts that open a webhook's circuit")
	fs.DurationVar(&o.cbCooldown, "circuit-cooldown", 5*time.Second, "how long a circuit first stays open before a probe")
	fs.DurationVar(&o.cbMaxCooldown, "circuit-max-cooldown", 5*time.Minute, "longest cool-down, reached by doubling on every failed probe")
	fs.StringVar(&o.fanoutCons, "fanout-consumer", "webhookd-fanout", "durable consumer name of the fan-out stage (shared by all instances)")
	fs.StringVar(&o.deliverCons, "delivery-consumer", "webhookd-deliver", "durable consumer name of the delivery stage (shared by all instances)")
	fs.BoolVar(&o.syncAlways, "sync-always", false, "embedded NATS: fsync every write (survives power loss, slower)")
	fs.StringVar(&o.pprofAddr, "pprof-addr", "", "serve /debug/pprof on this address (off when empty)")
	fs.StringVar(&o.encryptionKey, "encryption-key", "", "encrypt webhook secrets at rest (AES-256-GCM): 32-byte keys, base64 or hex, comma-separated; the first seals, the others only open (rotation)")
	fs.StringVar(&o.adminAddr, "admin-addr", "", "serve the unauthenticated admin endpoint /admin/backup here; loopback only unless --allow-public-debug (off when empty)")
	fs.BoolVar(&o.publicDebug, "allow-public-debug", false, "DANGEROUS: let --admin-addr and --pprof-addr listen beyond loopback (they serve the whole registry file and the process's arguments, unauthenticated)")
	fs.StringVar(&o.natsName, "nats-name", "webhookd", "NATS connection name")
	fs.StringVar(&o.natsCreds, "nats-creds", "", "NATS credentials file (JWT + nkey)")
	fs.StringVar(&o.natsNKey, "nats-nkey", "", "NATS nkey seed file")
	fs.StringVar(&o.natsUser, "nats-user", "", "NATS user name")
	fs.StringVar(&o.natsPassword, "nats-password", "", "NATS password")
	fs.StringVar(&o.natsToken, "nats-token", "", "NATS token")
	fs.StringVar(&o.natsTLSCA, "nats-tls-ca", "", "CA file for the NATS server's certificate")
	fs.StringVar(&o.natsTLSCert, "nats-tls-cert", "", "client certificate for NATS (with --nats-tls-key)")
	fs.StringVar(&o.natsTLSKey, "nats-tls-key", "", "client key for NATS (with --nats-tls-cert)")
	fs.Usage = func() { usage(fs) }
	return fs
}

func usage(fs *flag.FlagSet) {
	w := fs.Output()
	fmt.Fprintf(w, "Usage: webhookd [flags]\n       webhookd version\n       webhookd healthcheck [--url URL]\n"+
		"       webhookd check [flags]           validate configuration and the data dir (offline)\n"+
		"       webhookd backup --out FILE [--admin-url URL | --data-dir DIR]\n"+
		"       webhookd keys create|list|revoke [--workspace W] [--expires 720h] [KEY_ID]\n\n")
	fmt.Fprintf(w, "Every flag has an environment twin; a flag given on the command line wins.\n\n")
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	sort.Strings(names)
	for _, n := range names {
		f := fs.Lookup(n)
		def := f.DefValue
		if def == "" {
			def = `""`
		}
		fmt.Fprintf(w, "  --%s\n      %s\n      (env %s, default %s)\n", n, f.Usage, envName(n), def)
	}
}

// errUsage marks errors that should exit with status 2.
var errUsage = errors.New("usage")

// parseOptions reads args, then fills every flag not given from its
// environment twin. Any bad value is an errUsage naming the flag.
func parseOptions(args []string, getenv func(string) string, out io.Writer) (options, error) {
	var o options
	fs := newFlagSet(&o, out)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, err
		}
		return o, fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for _, name := range []string{"api-keys", "encryption-key", "nats-password", "nats-token"} {
		if given[name] {
			o.secretFlags = append(o.secretFlags, "--"+name)
		}
	}
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || envErr != nil {
			return
		}
		if v := getenv(envName(f.Name)); v != "" {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = fmt.Errorf("%w: invalid value for %s (flag --%s): %v", errUsage, envName(f.Name), f.Name, err)
			}
		}
	})
	if envErr != nil {
		return o, envErr
	}
	if err := o.validate(); err != nil {
		return o, fmt.Errorf("%w: %v", errUsage, err)
	}
	return o, nil
}

func (o *options) validate() error {
	positive := map[string]time.Duration{"--delivery-timeout": o.deliveryTO, "--retry-initial": o.retryInitial,
		"--retry-max-interval": o.retryMaxIvl, "--retry-max-age": o.retryMaxAge, "--event-retention": o.eventRetention}
	for name, d := range positive {
		if d <= 0 {
			return fmt.Errorf("%s must be positive, got %s", name, d)
		}
	}
	switch {
	case o.retryMaxIvl < o.retryInitial:
		return fmt.Errorf("--retry-max-interval (%s) must not be below --retry-initial (%s)", o.retryMaxIvl, o.retryInitial)
	case o.retryMaxTries < 0:
		return fmt.Errorf("--retry-max-attempts must be 0 or more, got %d", o.retryMaxTries)
	case o.directDeadline < 0:
		return fmt.Errorf("--direct-deadline must be 0 (off) or positive, got %s", o.directDeadline)
	case o.maxConnsHost < 1:
		return fmt.Errorf("--max-conns-per-host must be at least 1, got %d", o.maxConnsHost)
	case o.maxEventBytes < 1024:
		return fmt.Errorf("--max-event-bytes must be at least 1024, got %d", o.maxEventBytes)
	case o.replicas < 1 || o.replicas > 5:
		return fmt.Errorf("--stream-replicas must be 1 to 5, got %d", o.replicas)
	case o.dataDir == "":
		return errors.New("--data-dir must not be empty")
	case o.failuresPerHook < 1 || o.failuresPerHook > 10000:
		return fmt.Errorf("--failures-per-webhook must be 1 to 10000, got %d", o.failuresPerHook)
	case o.failureRetention < time.Minute:
		return fmt.Errorf("--failure-retention must be at least 1m, got %s", o.failureRetention)
	case o.replayRate <= 0 || o.replayRate > 100000:
		return fmt.Errorf("--replay-rate must be above 0 and at most 100000, got %g", o.replayRate)
	case o.attemptsPerHook < 1 || o.attemptsPerHook > 100000:
		return fmt.Errorf("--delivery-log-per-webhook must be 1 to 100000, got %d", o.attemptsPerHook)
	case o.attemptRetention < time.Minute:
		return fmt.Errorf("--delivery-log-retention must be at least 1m, got %s", o.attemptRetention)
	case o.natsMaxStore < capacity.MinStore:
		return fmt.Errorf("--nats-max-store must be at least %d (64 MiB), got %d", capacity.MinStore, o.natsMaxStore)
	case o.natsMaxMemory < 0:
		return fmt.Errorf("--nats-max-memory must not be negative, got %d", o.natsMaxMemory)
	case o.natsMaxPayload < 1024 || o.natsMaxPayload > 64<<20:
		return fmt.Errorf("--nats-max-payload must be 1 KiB to 64 MiB, got %d", o.natsMaxPayload)
	case o.natsURL == "" && o.maxEventBytes > o.natsMaxPayload-16<<10:
		return fmt.Errorf("--max-event-bytes (%d) must stay 16 KiB below --nats-max-payload (%d): a delivery job is the event plus its headers", o.maxEventBytes, o.natsMaxPayload)
	case o.maxDeliveries < 1:
		return fmt.Errorf("--max-deliveries must be at least 1, got %d", o.maxDeliveries)
	case o.tombstoneGrace < time.Minute:
		return fmt.Errorf("--registry-tombstone-grace must be at least 1m, got %s", o.tombstoneGrace)
	case o.cbFailures < 1:
		return fmt.Errorf("--circuit-failures must be at least 1, got %d", o.cbFailures)
	case o.cbTimeouts < 1:
		return fmt.Errorf("--circuit-timeouts must be at least 1, got %d", o.cbTimeouts)
	case o.cbCooldown <= 0:
		return fmt.Errorf("--circuit-cooldown must be positive, got %s", o.cbCooldown)
	case o.cbMaxCooldown < o.cbCooldown:
		return fmt.Errorf("--circuit-max-cooldown (%s) must not be below --circuit-cooldown (%s)", o.cbMaxCooldown, o.cbCooldown)
	case o.disableAfter < 0:
		return fmt.Errorf("--disable-after must be 0 (never) or positive, got %s", o.disableAfter)
	}
	for flagName, v := range map[string]string{"--events-stream": o.eventsStream, "--deliveries-stream": o.delivStream,
		"--fanout-consumer": o.fanoutCons, "--delivery-consumer": o.deliverCons} {
		if v == "" || strings.ContainsAny(v, " .*>\t\n/\\") {
			return fmt.Errorf("%s %q must be a non-empty name without spaces, dots, wildcards or slashes", flagName, v)
		}
	}
	for flagName, addr := range map[string]string{"--admin-addr": o.adminAddr, "--pprof-addr": o.pprofAddr} {
		if addr != "" && !o.publicDebug && !loopbackAddr(addr) {
			return fmt.Errorf("%s %q is not a loopback address: it would serve unauthenticated debug data to the network; bind it to 127.0.0.1 (or pass --allow-public-debug)", flagName, addr)
		}
	}
	if o.natsURL == "" && !loopbackAddr(o.natsListen) && o.natsUser == "" && o.natsToken == "" {
		return fmt.Errorf("--nats-listen %q is not a loopback address and the embedded NATS server has no authentication: anyone reaching it could read and forge every tenant's events and subscriptions; set --nats-user/--nats-password or --nats-token (the embedded server then requires them), or listen on 127.0.0.1", o.natsListen)
	}
	if strings.ContainsAny(o.attemptsStream, " .*>\t\n/\\") {
		return fmt.Errorf("--delivery-log-stream %q must be a name without spaces, dots, wildcards or slashes", o.attemptsStream)
	}
	if strings.ContainsAny(o.failuresStream, " .*>\t\n/\\") {
		return fmt.Errorf("--failures-stream %q must be a name without spaces, dots, wildcards or slashes", o.failuresStream)
	}
	if strings.ContainsAny(o.keysBucket, " .*>\t\n/\\") {
		return fmt.Errorf("--keys-bucket %q must be a name without spaces, dots, wildcards or slashes", o.keysBucket)
	}
	if _, err := api.ParseTrustedProxies(o.trustedProxies); err != nil {
		return fmt.Errorf("--trusted-proxies: %v", err)
	}
	if h := http.CanonicalHeaderKey(o.fwdHeader); h != api.HeaderXForwardedFor && h != api.HeaderForwarded {
		return fmt.Errorf("--forwarded-header must be %s or %s, got %q", api.HeaderXForwardedFor, api.HeaderForwarded, o.fwdHeader)
	}
	if strings.ContainsAny(o.registryBucket, " .*>\t\n/\\") {
		return fmt.Errorf("--registry-bucket %q must be a name without spaces, dots, wildcards or slashes", o.registryBucket)
	}
	if o.delivSubject == "" || strings.ContainsAny(o.delivSubject, " *>") {
		return fmt.Errorf("--deliveries-subject %q must be a subject root without wildcards or spaces", o.delivSubject)
	}
	switch o.logLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("--log-level must be debug, info, warn or error, got %q", o.logLevel)
	}
	switch o.logFormat {
	case "text", "json":
	default:
		return fmt.Errorf("--log-format must be text or json, got %q", o.logFormat)
	}
	return nil
}

// lookupEnv adapts os.Getenv for parseOptions.
func lookupEnv(k string) string { return os.Getenv(k) }

// loopbackAddr reports whether a "host:port" listen address stays on this
// machine: a loopback IP or "localhost". An empty host listens everywhere.
func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}
