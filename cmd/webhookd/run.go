package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/webhookd/webhookd/dispatcher"
	"github.com/webhookd/webhookd/dispatcher/breaker"
	"github.com/webhookd/webhookd/dispatcher/capacity"
	"github.com/webhookd/webhookd/dispatcher/retry"
	"github.com/webhookd/webhookd/dispatcher/transport"
	"github.com/webhookd/webhookd/events"
	"github.com/webhookd/webhookd/events/natsconn"
	"github.com/webhookd/webhookd/registry"
	"github.com/webhookd/webhookd/registry/api"
	"github.com/webhookd/webhookd/registry/apikeys"
	"github.com/webhookd/webhookd/registry/console"
	"github.com/webhookd/webhookd/registry/deliverylog"
	"github.com/webhookd/webhookd/registry/failurelog"
	"github.com/webhookd/webhookd/registry/health"
	"github.com/webhookd/webhookd/registry/replay"
	"github.com/webhookd/webhookd/registry/replica"
	"github.com/webhookd/webhookd/registry/ssrf"
)

func newLogger(o options, w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(o.logLevel))
	hopts := &slog.HandlerOptions{Level: lvl}
	if o.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, hopts))
	}
	return slog.New(slog.NewTextHandler(w, hopts))
}

// run starts everything in dependency order, blocks until ctx ends, and
// stops everything in reverse order.
func run(ctx context.Context, o options, logOut io.Writer) error {
	log := newLogger(o, logOut)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "webhookd", Name: "build_info",
		Help: "Always 1; the version label says which build is running.", ConstLabels: prometheus.Labels{"version": buildVersion()}})
	buildInfo.Set(1)
	reg.MustRegister(buildInfo)

	if err := os.MkdirAll(o.dataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}

	// 1. Registry.
	keysAtRest, err := registry.ParseEncryptionKeys(o.encryptionKey)
	if err != nil {
		return fmt.Errorf("--encryption-key: %w", err)
	}
	sealer, err := registry.NewSealer(keysAtRest)
	if err != nil {
		return fmt.Errorf("--encryption-key: %w", err)
	}
	// One SSRF policy for the API, journal entries and the dialer.
	guard, err := targetGuard(o)
	if err != nil {
		return err
	}
	validator := registry.Validator{Guard: guard}
	// The failure limits apply to the records kept in bbolt (local mode,
	// and until an upgrade to shared records has drained them).
	store, err := registry.Open(registry.Config{Path: filepath.Join(o.dataDir, "webhookd.db"), Registerer: reg, Sealer: sealer,
		Validator: validator, MaxFailuresPerWebhook: o.failuresPerHook, FailureRetention: o.failureRetention})
	if err != nil {
		return err
	}
	defer func() {
		if err := store.Close(); err != nil {
			log.Error("closing registry", "err", err)
		}
	}()
	keys, err := apiKeys(ctx, o, store, log)
	if err != nil {
		return err
	}

	// Every stream's byte limit is a share of one store budget.
	lim := capacity.Budget(o.natsMaxStore)

	// 2. NATS: embedded unless an external URL is given.
	natsURL := o.natsURL
	var inProcess nats.InProcessConnProvider
	if natsURL == "" {
		emb, err := natsconn.StartEmbedded(natsconn.EmbeddedConfig{
			Listen: o.natsListen, StoreDir: filepath.Join(o.dataDir, "jetstream"),
			MaxStore: o.natsMaxStore, MaxMemory: o.natsMaxMemory, MaxPayload: int32(o.natsMaxPayload),
			User: o.natsUser, Password: o.natsPassword, Token: o.natsToken,
			SyncAlways: o.syncAlways, Logger: log,
		})
		if err != nil {
			return err
		}
		defer emb.Shutdown()
		natsURL, inProcess = emb.ClientURL(), emb.Server()
		log.Info("embedded NATS started", "url", natsURL)
	}
	nc, err := natsconn.Connect(natsconn.Config{
		URL: natsURL, Name: o.natsName, InProcess: inProcess,
		CredsFile: o.natsCreds, NKeySeedFile: o.natsNKey, User: o.natsUser, Password: o.natsPassword,
		Token: o.natsToken, CAFile: o.natsTLSCA, CertFile: o.natsTLSCert, KeyFile: o.natsTLSKey,
		Logger: log, Registerer: reg,
	})
	if err != nil {
		return err
	}
	defer func() {
		// Drain flushes the acks of the last deliveries before closing.
		if err := nc.Drain(); err == nil {
			for i := 0; i < 50 && !nc.IsClosed(); i++ {
				time.Sleep(100 * time.Millisecond)
			}
		}
		nc.Close()
	}()

	// 3. The shared registry: every registration and deletion goes through a
	// key-value bucket that all instances follow (unless turned off).
	var rep *replica.Replica
	if o.registryBucket != "" {
		js, err := jetstream.New(nc)
		if err != nil {
			return fmt.Errorf("jetstream: %w", err)
		}
		rep, err = replica.New(replica.Config{JetStream: js, Store: store, Bucket: o.registryBucket, Replicas: o.replicas,
			TombstoneGrace: o.tombstoneGrace, MaxBytes: lim.Registry, Logger: log, Registerer: reg})
		if err != nil {
			return err
		}
		store.UseJournal(rep)
	} else {
		log.Warn("--registry-bucket is empty: subscriptions stay local to this instance; do not run several instances on this NATS")
	}

	// API keys managed at run time (`webhookd keys`), shared like the
	// registry. Until its watch has loaded the bucket, shared keys do not
	// resolve and the bootstrap key is refused (see api.KeySet).
	var sharedKeys *apikeys.Store
	if o.keysBucket != "" {
		js, err := jetstream.New(nc)
		if err != nil {
			return fmt.Errorf("jetstream: %w", err)
		}
		sharedKeys, err = apikeys.New(apikeys.Config{JetStream: js, Bucket: o.keysBucket, Replicas: o.replicas,
			MaxBytes: lim.Keys, Logger: log, Registerer: reg})
		if err != nil {
			return err
		}
	}

	// 4. Dispatcher.
	var roots *x509.CertPool
	if o.caFile != "" {
		if roots, err = loadCAs(o.caFile); err != nil {
			return err
		}
	}
	client, err := transport.NewClient(transport.Config{
		Timeout: o.deliveryTO, Guard: guard, MaxConnsPerHost: o.maxConnsHost, RootCAs: roots,
	})
	if err != nil {
		return err
	}
	// Endpoint health, shared like the registry. The watch reports every
	// record to the dispatcher, which is built just below and before the
	// watch starts.
	var disp *dispatcher.Dispatcher
	var hs *health.Store
	if o.healthBucket != "" {
		js, err := jetstream.New(nc)
		if err != nil {
			return fmt.Errorf("jetstream: %w", err)
		}
		hs, err = health.New(health.Config{JetStream: js, Bucket: o.healthBucket, Replicas: o.replicas, MaxBytes: lim.Health, Logger: log,
			OnChange: func(r health.Record) { disp.ObserveHealth(r) }})
		if err != nil {
			return err
		}
	}
	// Failure records, shared like the registry so that every instance
	// lists and retries the same ones.
	var flog *failurelog.Log
	var recorder dispatcher.FailureRecorder = store
	var apiFailures api.FailureStore // nil: the local store
	if o.registryBucket != "" && o.failuresStream != "" {
		js, err := jetstream.New(nc)
		if err != nil {
			return fmt.Errorf("jetstream: %w", err)
		}
		flog, err = failurelog.New(failurelog.Config{JetStream: js, Stream: o.failuresStream,
			MaxPerWebhook: o.failuresPerHook, MaxAge: o.failureRetention, MaxBytes: lim.Failures, Replicas: o.replicas,
			Logger: log, Registerer: reg})
		if err != nil {
			return err
		}
		recorder, apiFailures = flog, flog
	}
	// The delivery log: every attempt, shared by every instance.
	var dlog *deliverylog.Log
	if o.attemptsStream != "" {
		js, err := jetstream.New(nc)
		if err != nil {
			return fmt.Errorf("jetstream: %w", err)
		}
		dlog, err = deliverylog.New(deliverylog.Config{JetStream: js, Stream: o.attemptsStream,
			MaxPerWebhook: o.attemptsPerHook, MaxAge: o.attemptRetention, MaxBytes: lim.Attempts, Replicas: o.replicas,
			Logger: log, Registerer: reg})
		if err != nil {
			return err
		}
	}
	disp, err = dispatcher.New(dispatcher.Config{
		Conn: nc, Subscriptions: store.Index(), Lookup: lookupOf(rep), Registry: registrySyncOf(rep), Failures: recorder, Client: client,
		EventStream: events.StreamConfig{
			Name: o.eventsStream, Subjects: events.Subjects{Prefix: o.subjectPrefix}, MaxAge: o.eventRetention, Replicas: o.replicas,
			MaxBytes: lim.Events,
		},
		DeliveriesMaxBytes: lim.Deliveries,
		MaxDeliveries:      o.maxDeliveries,
		DeliveriesStream:   o.delivStream,
		DeliveriesSubject:  o.delivSubject,
		FanoutConsumer:     o.fanoutCons,
		DeliveryConsumer:   o.deliverCons,
		MaxEventBytes:      o.maxEventBytes,
		Replicas:           o.replicas,
		Retry: retry.Policy{
			Initial: o.retryInitial, MaxInterval: o.retryMaxIvl, MaxAge: o.retryMaxAge, MaxAttempts: o.retryMaxTries,
		},
		DeliveryTimeout: o.deliveryTO,
		DirectDeadline:  directDeadline(o.directDeadline),
		MaxConnsPerHost: o.maxConnsHost,
		Breaker: breaker.Config{
			FailureThreshold: o.cbFailures, TimeoutThreshold: o.cbTimeouts, Cooldown: o.cbCooldown, MaxCooldown: o.cbMaxCooldown,
		},
		Health:        healthOf(hs),
		Attempts:      attemptsOf(dlog),
		Disabler:      store,
		DisableAfter:  o.disableAfter,
		DisableOnGone: o.disableOnGone,
		UserAgent:     "webhookd/" + buildVersion(),
		BeforeAck:     faultExitBeforeAck(log),
		Logger:        log,
		Registerer:    reg,
	})
	if err != nil {
		return err
	}

	// Store fill: gauges per stream, trimming of fanned-out events, the
	// /readyz notice when a stream is nearly full.
	capJS, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	watch := []capacity.Stream{{Name: o.delivStream, Limit: lim.Deliveries}}
	if o.registryBucket != "" {
		watch = append(watch, capacity.Stream{Name: "KV_" + o.registryBucket})
	}
	if o.healthBucket != "" {
		watch = append(watch, capacity.Stream{Name: "KV_" + o.healthBucket})
	}
	if flog != nil {
		watch = append(watch, capacity.Stream{Name: o.failuresStream})
	}
	if dlog != nil {
		watch = append(watch, capacity.Stream{Name: o.attemptsStream})
	}
	if sharedKeys != nil {
		watch = append(watch, capacity.Stream{Name: "KV_" + o.keysBucket})
	}
	if replaysOn(o) {
		watch = append(watch, capacity.Stream{Name: "KV_" + replay.DefaultBucket})
	}
	// The events stream has no server-side MaxAge: the Monitor keeps
	// --event-retention, never purging an event not fanned out.
	mon, err := capacity.New(capacity.Config{JetStream: capJS, EventsStream: o.eventsStream, FanoutConsumer: o.fanoutCons,
		Streams: watch, Retention: o.eventRetention, Logger: log, Registerer: reg})
	if err != nil {
		return err
	}

	// POST /api/events publishes through the events stream.
	pubJS, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	publisher, err := events.NewPublisher(pubJS, events.PublisherConfig{Stream: o.eventsStream})
	if err != nil {
		return err
	}

	// Replays re-deliver what the events stream still holds; their jobs
	// are shared like the registry, so any instance reports (and takes
	// over) any job. A replay of failed deliveries needs the delivery log.
	var replays *replay.Manager
	if replaysOn(o) {
		rjs, err := jetstream.New(nc)
		if err != nil {
			return fmt.Errorf("jetstream: %w", err)
		}
		replays, err = replay.New(replay.Config{JetStream: rjs, Replicas: o.replicas, EventStream: o.eventsStream,
			Decoder:  events.Decoder{Subjects: events.Subjects{Prefix: o.subjectPrefix}, MaxBytes: o.maxEventBytes},
			Webhooks: store.Index(), Enqueuer: disp, Failed: dlog, Rate: o.replayRate, MaxBytes: lim.Replays,
			Logger: log, Registerer: reg})
		if err != nil {
			return err
		}
	}

	// 5. HTTP API.
	proxies, err := api.ParseTrustedProxies(o.trustedProxies) // validated with the flags
	if err != nil {
		return fmt.Errorf("--trusted-proxies: %w", err)
	}
	srv, err := api.New(api.Config{
		Store: store, Validator: validator, Failures: apiFailures,
		Keys:           api.KeySet{Static: keys.static, StaticWorkspaces: keys.workspaces, Shared: sharedKeysOf(sharedKeys), Bootstrap: keys.bootstrap},
		TrustedProxies: proxies, ForwardedHeader: o.fwdHeader,
		Events:     publisher,
		Deliveries: deliveriesOf(dlog), Resend: disp, Replays: replaysOf(replays), Console: console.Handler(),
		Finder: events.Finder{JetStream: pubJS, Stream: o.eventsStream,
			Decoder: events.Decoder{Subjects: events.Subjects{Prefix: o.subjectPrefix}, MaxBytes: o.maxEventBytes}},
		Warnings: func() []string {
			if err := mon.Ready(); err != nil {
				return []string{err.Error()}
			}
			return nil
		},
		EventDecoder: events.Decoder{Subjects: events.Subjects{Prefix: o.subjectPrefix}, MaxBytes: o.maxEventBytes},
		Logger:       log, Gatherer: reg, Registerer: reg, Redeliver: disp, Health: disp, Tester: disp,
		Ready: func() error {
			if !nc.IsConnected() {
				return errors.New("NATS is not connected")
			}
			if sharedKeys != nil {
				if err := sharedKeys.Ready(); err != nil {
					return err
				}
			}
			if rep != nil {
				if err := rep.Ready(); err != nil {
					return err
				}
			}
			if flog != nil {
				if err := flog.Ready(); err != nil {
					return err
				}
			}
			return disp.Ready()
		},
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", o.httpAddr)
	if err != nil {
		return fmt.Errorf("http: %w", err)
	}
	if len(o.secretFlags) > 0 {
		log.Warn("secrets given as command-line flags are readable by every local user in the process list; pass them as environment variables (WEBHOOKD_API_KEYS, ...) instead",
			"flags", strings.Join(o.secretFlags, ","))
	}
	log.Info("webhookd started", "version", buildVersion(), "http", ln.Addr().String(), "data_dir", o.dataDir)

	dispCtx, stopDisp := context.WithCancel(context.WithoutCancel(ctx))
	defer stopDisp()
	var wg sync.WaitGroup
	var dispErr, repErr, apiErr error
	wg.Go(func() { dispErr = disp.Run(dispCtx) })
	wg.Go(func() { _ = mon.Run(dispCtx) })
	if hs != nil {
		wg.Go(func() { _ = hs.Run(dispCtx) })
	}
	if rep != nil {
		wg.Go(func() { repErr = rep.Run(dispCtx) })
	}
	if sharedKeys != nil {
		wg.Go(func() { _ = sharedKeys.Run(dispCtx) })
	}
	if dlog != nil {
		wg.Go(func() { _ = dlog.Run(dispCtx) })
	}
	if replays != nil {
		wg.Go(func() { _ = replays.Run(dispCtx) })
	}
	if flog != nil {
		wg.Go(func() { _ = flog.Run(dispCtx) })
		wg.Go(func() { flog.Import(dispCtx, store) })
	} else {
		// Failure records live in bbolt: expire them there.
		wg.Go(func() { store.RunFailurePruning(dispCtx, log) })
	}
	for _, l := range []struct {
		addr string
		mux  func() *http.ServeMux
	}{{o.pprofAddr, pprofMux}, {o.adminAddr, func() *http.ServeMux { return adminMux(store, log) }}} {
		if l.addr == "" {
			continue
		}
		stopL, err := serveAux(l.addr, l.mux(), log)
		if err != nil {
			stopDisp()
			wg.Wait()
			return err
		}
		defer stopL()
	}
	// The API runs until the signal; then the dispatcher finishes its
	// in-flight work; then the deferred closes run: NATS, embedded server,
	// bbolt.
	apiErr = srv.Run(ctx, ln)
	log.Info("shutting down")
	stopDisp()
	wg.Wait()
	if dlog != nil {
		// The last attempts' records, before NATS closes.
		fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := dlog.Flush(fctx); err != nil {
			log.Warn("delivery log not flushed", "err", err)
		}
		cancel()
	}
	return errors.Join(apiErr, dispErr, repErr)
}

// attemptsOf and deliveriesOf keep a nil *deliverylog.Log from becoming a
// non-nil interface.
func attemptsOf(l *deliverylog.Log) dispatcher.AttemptLog {
	if l == nil {
		return nil
	}
	return l
}

func replaysOf(m *replay.Manager) api.Replayer {
	if m == nil {
		return nil
	}
	return m
}

func deliveriesOf(l *deliverylog.Log) api.DeliveryLog {
	if l == nil {
		return nil
	}
	return l
}

// healthOf keeps a nil *health.Store from becoming a non-nil interface.
func healthOf(hs *health.Store) dispatcher.HealthStore {
	if hs == nil {
		return nil
	}
	return hs
}

// lookupOf keeps a nil *Replica from becoming a non-nil interface.
func lookupOf(rep *replica.Replica) dispatcher.Lookup {
	if rep == nil {
		return nil
	}
	return rep
}

func registrySyncOf(rep *replica.Replica) dispatcher.RegistrySync {
	if rep == nil {
		return nil
	}
	return rep
}

// replaysOn reports whether the daemon runs replays: they need the shared
// registry and the delivery log.
func replaysOn(o options) bool { return o.registryBucket != "" && o.attemptsStream != "" }

// sharedKeysOf keeps a nil *apikeys.Store from becoming a non-nil interface.
func sharedKeysOf(s *apikeys.Store) api.SharedKeys {
	if s == nil {
		return nil
	}
	return s
}

func targetGuard(o options) (*ssrf.Guard, error) {
	cidrs, err := ssrf.ParseCIDRs(o.allowCIDRs)
	if err != nil {
		return nil, fmt.Errorf("--allow-target-cidrs: %w", err)
	}
	return &ssrf.Guard{AllowPrivate: o.allowPrivate, AllowCIDRs: cidrs}, nil
}

func loadCAs(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--ca-file: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--ca-file: %s holds no PEM certificate", path)
	}
	return pool, nil
}

// directDeadline maps --direct-deadline to dispatcher.Config, where 0
// means the default and a negative value turns direct delivery off.
func directDeadline(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}
