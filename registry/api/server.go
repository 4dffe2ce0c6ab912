package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/webhookd/webhookd/events"
	"github.com/webhookd/webhookd/registry"
)

const (
	defaultMaxBodyBytes    = 1 << 20
	defaultShutdownTimeout = 10 * time.Second
	defaultListLimit       = 100
	maxListLimit           = 1000
)

// Config wires a Server. Store and Keys are required; every other zero value
// is usable.
type Config struct {
	// Store holds the subscriptions and recorded failures.
	Store *registry.Store
	// Keys authenticates x-copy-ai-api-key and maps it to a workspace:
	// a *registry.KeyRing, or a KeySet combining configured, shared and
	// bootstrap keys.
	Keys KeyResolver
	// TrustedProxies are the load balancers and reverse proxies in front
	// of the API. Only a request whose direct peer is inside one of them
	// has its client address taken from ForwardedHeader, for the
	// failed-authentication limits; every other request is charged to its
	// peer address and its forwarding headers are ignored (they are
	// trivially forged). Empty: forwarding headers are never read.
	TrustedProxies []netip.Prefix
	// ForwardedHeader names the header the trusted proxies set:
	// "X-Forwarded-For" (zero value) or "Forwarded" (RFC 7239). Only that
	// one is read, so a client cannot slip in the other.
	ForwardedHeader string
	// Validator checks new subscriptions; its zero value has SSRF protection on.
	Validator registry.Validator
	// Logger receives request and error logs; nil discards them.
	Logger *slog.Logger
	// Gatherer is served on /metrics; nil makes /metrics answer 404.
	Gatherer prometheus.Gatherer
	// Registerer receives the API's own metrics; nil records none.
	Registerer prometheus.Registerer
	// Ready backs /readyz: a nil error means ready, anything else is a 503
	// whose details.reason is err.Error() — shown to unauthenticated callers,
	// so it must not carry secrets. A nil func means always ready.
	Ready func() error
	// Warnings, when set, adds to a ready /readyz answer the conditions
	// that need an operator but must not take the instance out of rotation
	// (a stream nearly full: every instance sees the same streams, and an
	// API out of rotation could not even delete the webhooks filling it).
	// Shown unauthenticated, like Ready's reason.
	Warnings func() []string
	// Redeliver performs manual retries of recorded failures; nil makes the
	// retry route answer 501 REDELIVERY_UNAVAILABLE.
	Redeliver Redeliverer
	// Failures holds the records of deliveries that ran out of retries.
	// Nil uses Store's local records; a multi-instance deployment passes
	// the shared log (registry/failurelog), so that every instance lists
	// and retries the same records. If it also has Forget, a deleted
	// webhook's records are forgotten.
	Failures FailureStore
	// Health supplies each webhook's delivery health for the webhook views
	// and is reset when a webhook is enabled. Nil shows every webhook as
	// {"state":"healthy"} and resets nothing.
	Health HealthSource
	// Events stores the events POST /api/events accepts in the events
	// stream (events.Publisher provides it). Nil makes that route answer
	// 503 EVENTS_UNAVAILABLE.
	Events EventPublisher
	// EventDecoder is the fan-out's decoder (the same Subjects and
	// MaxBytes the dispatcher is given): POST /api/events builds each
	// event's subject with its Subjects and accepts only what it accepts,
	// so that no accepted event is dropped as malformed later. Its
	// MaxBytes (0: events.DefaultMaxBytes) is also that route's body limit.
	EventDecoder events.Decoder
	// Tester sends the test events of POST /api/webhook/{id}/test
	// (dispatcher.Dispatcher provides it, with the delivery client, SSRF
	// guard and signing of real deliveries). Nil makes that route answer
	// 501 TEST_UNAVAILABLE.
	Tester Tester
	// Deliveries answers the delivery log's routes (deliverylog.Log).
	// Nil makes them answer 501 DELIVERIES_UNAVAILABLE.
	Deliveries DeliveryLog
	// Finder finds events in the events stream for GET /api/events/{id}
	// and delivery retries (events.Finder).
	Finder EventFinder
	// Resend queues delivery retries (dispatcher.Dispatcher). Nil, or a
	// nil Finder, makes the delivery retry route answer 501.
	Resend Resender
	// Replays runs the replay routes (replay.Manager). Nil makes them
	// answer 501 REPLAY_UNAVAILABLE.
	Replays Replayer
	// Console, when set, serves the web console at GET / and
	// /console/<file> (registry/console.Handler).
	Console http.Handler
	// MaxBodyBytes caps request bodies; 0 means 1 MiB.
	MaxBodyBytes int64
	// ShutdownTimeout bounds Run's graceful shutdown; 0 means 10s.
	ShutdownTimeout time.Duration
}

// Redeliverer hands a recorded failure back to the delivery pipeline.
// It must return only once the redelivery is durably queued: on nil the
// failure record is deleted.
type Redeliverer interface {
	Redeliver(ctx context.Context, f registry.Failure) error
}

// Server is the management API. It is safe for concurrent use.
type Server struct {
	store           *registry.Store
	keys            KeyResolver
	clients         clientResolver
	validator       registry.Validator
	log             *slog.Logger
	ready           func() error
	warnings        func() []string
	redeliver       Redeliverer
	failures        FailureStore
	health          HealthSource
	events          EventPublisher
	eventDecoder    events.Decoder
	tester          Tester
	testLimits      *testLimiter
	deliveries      DeliveryLog
	finder          EventFinder
	resend          Resender
	replays         Replayer
	console         http.Handler
	maxBodyBytes    int64
	shutdownTimeout time.Duration

	metrics        *metrics
	metricsHandler http.Handler // nil without a Gatherer
	limiter        *failureLimiter
	mux            *http.ServeMux
	handler        http.Handler
}

// New validates cfg, registers the API metrics and builds the routes.
func New(cfg Config) (*Server, error) {
	switch {
	case cfg.Store == nil:
		return nil, errors.New("api: Config.Store is required")
	case cfg.Keys == nil:
		return nil, errors.New("api: Config.Keys is required")
	case cfg.MaxBodyBytes < 0:
		return nil, fmt.Errorf("api: Config.MaxBodyBytes must not be negative, got %d", cfg.MaxBodyBytes)
	case cfg.ShutdownTimeout < 0:
		return nil, fmt.Errorf("api: Config.ShutdownTimeout must not be negative, got %s", cfg.ShutdownTimeout)
	case cfg.EventDecoder.MaxBytes < 0:
		return nil, fmt.Errorf("api: Config.EventDecoder.MaxBytes must not be negative, got %d", cfg.EventDecoder.MaxBytes)
	}
	if cfg.EventDecoder.Subjects.Prefix != "" {
		if err := events.ValidatePrefix(cfg.EventDecoder.Subjects.Prefix); err != nil {
			return nil, fmt.Errorf("api: Config.EventDecoder: %w", err)
		}
	}
	clients, err := newClientResolver(cfg.TrustedProxies, cfg.ForwardedHeader)
	if err != nil {
		return nil, err
	}
	s := &Server{
		store:           cfg.Store,
		keys:            cfg.Keys,
		clients:         clients,
		validator:       cfg.Validator,
		log:             cfg.Logger,
		ready:           cfg.Ready,
		warnings:        cfg.Warnings,
		redeliver:       cfg.Redeliver,
		failures:        cfg.Failures,
		health:          cfg.Health,
		events:          cfg.Events,
		eventDecoder:    cfg.EventDecoder,
		tester:          cfg.Tester,
		deliveries:      cfg.Deliveries,
		finder:          cfg.Finder,
		resend:          cfg.Resend,
		replays:         cfg.Replays,
		console:         cfg.Console,
		testLimits:      newTestLimiter(),
		maxBodyBytes:    cfg.MaxBodyBytes,
		shutdownTimeout: cfg.ShutdownTimeout,
		limiter: newFailureLimiter(budget{authFailBurst, authFailRefill}, budget{authAddrBurst, authAddrRefill},
			authFailMaxClients),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.failures == nil {
		s.failures = localFailures{cfg.Store}
	}
	if s.maxBodyBytes == 0 {
		s.maxBodyBytes = defaultMaxBodyBytes
	}
	if s.shutdownTimeout == 0 {
		s.shutdownTimeout = defaultShutdownTimeout
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	s.metrics = m
	if cfg.Gatherer != nil {
		s.metricsHandler = promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{})
	}
	s.mux = s.routes()
	s.handler = s.observe(s.recoverPanics(http.HandlerFunc(s.route)))
	return s, nil
}

// route is one registered route. The table is the single source of the
// mux's patterns and of the OpenAPI document's operations (a test checks
// that both list the same ones, each way).
type route struct {
	method, path string
	// authed routes run only for a caller with a valid API key.
	authed  bool
	handler handlerFunc
}

// routeTable lists every route in the order the OpenAPI document
// describes them.
func (s *Server) routeTable() []route {
	return []route{
		{http.MethodPost, "/api/webhook", true, s.createWebhook},
		{http.MethodGet, "/api/webhook", true, s.listWebhooks},
		{http.MethodGet, "/api/webhook/{id}", true, s.getWebhook},
		{http.MethodPatch, "/api/webhook/{id}", true, s.patchWebhook},
		{http.MethodDelete, "/api/webhook/{id}", true, s.deleteWebhook},
		{http.MethodGet, "/api/webhook/{id}/secret", true, s.getSecret},
		{http.MethodPost, "/api/webhook/{id}/rotate-secret", true, s.rotateSecret},
		{http.MethodPost, "/api/webhook/{id}/test", true, s.testWebhook},
		{http.MethodPost, "/api/webhook/{id}/enable", true, s.enableWebhook},
		{http.MethodGet, "/api/webhook/{id}/failures", true, s.listFailures},
		{http.MethodPost, "/api/webhook/{id}/failures/{failureId}/retry", true, s.retryFailure},
		{http.MethodGet, "/api/webhook/{id}/deliveries", true, s.listDeliveries},
		{http.MethodGet, "/api/webhook/{id}/deliveries/{deliveryId}", true, s.getDelivery},
		{http.MethodPost, "/api/webhook/{id}/deliveries/{deliveryId}/retry", true, s.retryDelivery},
		{http.MethodPost, "/api/webhook/{id}/replay", true, s.startReplay},
		{http.MethodGet, "/api/replays/{id}", true, s.getReplay},
		{http.MethodDelete, "/api/replays/{id}", true, s.cancelReplay},
		{http.MethodPost, "/api/events", true, s.publishEvent},
		{http.MethodGet, "/api/events/{eventId}", true, s.getEvent},
		{http.MethodGet, "/healthz", false, s.healthz},
		{http.MethodGet, "/readyz", false, s.readyz},
		{http.MethodGet, "/metrics", false, s.serveMetrics},
		{http.MethodGet, "/openapi.yaml", false, s.serveOpenAPI},
	}
}

func (s *Server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	for _, rt := range s.routeTable() {
		h := rt.handler
		if rt.authed {
			h = s.authed(h)
		}
		mux.Handle(rt.method+" "+rt.path, s.adapt(h))
	}
	return mux
}

// Handler returns the complete API handler (routes, auth, envelopes,
// panic recovery, metrics, request ids).
func (s *Server) Handler() http.Handler { return s.handler }

// Run serves on ln until ctx ends, then shuts down gracefully within
// Config.ShutdownTimeout. It returns nil after a clean shutdown and closes ln.
func (s *Server) Run(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	select {
	case err := <-served:
		// Serve only returns early on a listener failure.
		return fmt.Errorf("api: serve: %w", err)
	case <-ctx.Done():
	}

	// In-flight requests keep their own contexts (not ctx, which is already
	// done) so that graceful shutdown can actually let them finish.
	shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.shutdownTimeout)
	defer cancel()
	shutErr := srv.Shutdown(shutCtx)
	if shutErr != nil {
		// Deadline passed with requests still running: cut them off.
		_ = srv.Close()
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("api: serve: %w", err)
	}
	if shutErr != nil {
		return fmt.Errorf("api: shutdown: %w", shutErr)
	}
	return nil
}
