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
	redeliver       Redeliverer
	failures        FailureStore
	health          HealthSource
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
		redeliver:       cfg.Redeliver,
		failures:        cfg.Failures,
		health:          cfg.Health,
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

func (s *Server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("POST /api/webhook", s.adapt(s.authed(s.createWebhook)))
	mux.Handle("GET /api/webhook", s.adapt(s.authed(s.listWebhooks)))
	mux.Handle("GET /api/webhook/{id}", s.adapt(s.authed(s.getWebhook)))
	mux.Handle("DELETE /api/webhook/{id}", s.adapt(s.authed(s.deleteWebhook)))
	mux.Handle("GET /api/webhook/{id}/secret", s.adapt(s.authed(s.getSecret)))
	mux.Handle("POST /api/webhook/{id}/enable", s.adapt(s.authed(s.enableWebhook)))
	mux.Handle("GET /api/webhook/{id}/failures", s.adapt(s.authed(s.listFailures)))
	mux.Handle("POST /api/webhook/{id}/failures/{failureId}/retry", s.adapt(s.authed(s.retryFailure)))
	mux.Handle("GET /healthz", s.adapt(s.healthz))
	mux.Handle("GET /readyz", s.adapt(s.readyz))
	mux.Handle("GET /metrics", s.adapt(s.serveMetrics))
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
