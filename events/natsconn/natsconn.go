// Package natsconn owns webhookd's link to NATS: it starts the embedded
// NATS server with JetStream when no external server is configured, and it
// opens the client connection with webhookd's reconnect, authentication and
// TLS policy. It exists so that cmd/webhookd only wires and the event and
// dispatch packages only ever see a ready *nats.Conn.
package natsconn

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
)

// Config describes how to reach NATS. The zero value is not usable: URL is
// required (the embedded server's ClientURL when running embedded).
type Config struct {
	// URL is a comma-separated list of server URLs, e.g. "nats://a:4222,nats://b:4222".
	URL string
	// Name is the connection name shown in server monitoring. Zero means "webhookd".
	Name string

	// Authentication: at most one of CredsFile, NKeySeedFile, User/Password
	// and Token may be set.
	CredsFile    string // JWT + nkey credentials file (.creds)
	NKeySeedFile string // file holding an nkey seed ("SU...")
	User         string
	Password     string
	Token        string

	// TLS: CAFile trusts a private CA; CertFile and KeyFile present a client
	// certificate (both or neither).
	CAFile   string
	CertFile string
	KeyFile  string

	// ReconnectWait is the pause between reconnect attempts. Zero means 1s.
	// Reconnects are never given up.
	ReconnectWait time.Duration

	// InProcess, when set, connects to an embedded server without a socket.
	InProcess nats.InProcessConnProvider

	// Logger receives connection state changes. Nil means slog.Default().
	Logger *slog.Logger
	// Registerer, when set, gets the gauge webhookd_nats_connected.
	Registerer prometheus.Registerer
}

func (c Config) validate() error {
	if strings.TrimSpace(c.URL) == "" {
		return errors.New("natsconn: URL is required")
	}
	auth := 0
	for _, set := range []bool{c.CredsFile != "", c.NKeySeedFile != "", c.User != "" || c.Password != "", c.Token != ""} {
		if set {
			auth++
		}
	}
	if auth > 1 {
		return errors.New("natsconn: set only one of credentials file, nkey seed file, user/password and token")
	}
	if c.User != "" && c.Password == "" || c.User == "" && c.Password != "" {
		return errors.New("natsconn: user and password go together")
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return errors.New("natsconn: TLS client certificate and key go together")
	}
	for name, path := range map[string]string{"credentials file": c.CredsFile, "nkey seed file": c.NKeySeedFile,
		"TLS CA file": c.CAFile, "TLS certificate": c.CertFile, "TLS key": c.KeyFile} {
		if path == "" {
			continue
		}
		if _, err := os.Stat(path); err != nil {
			return fmt.Errorf("natsconn: %s: %w", name, err)
		}
	}
	return nil
}

// Connect opens the client connection. It fails fast on configuration
// errors, but when the servers are merely unreachable it returns a
// connection that keeps trying in the background (RetryOnFailedConnect), so
// the daemon can start, report not-ready, and recover by itself.
func Connect(cfg Config) (*nats.Conn, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	name := cfg.Name
	if name == "" {
		name = "webhookd"
	}
	wait := cfg.ReconnectWait
	if wait <= 0 {
		wait = time.Second
	}
	connected := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "webhookd", Name: "nats_connected",
		Help: "1 while the NATS client connection is up, 0 while it is down or reconnecting.",
	})
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(connected); err != nil {
			return nil, fmt.Errorf("natsconn: register metrics: %w", err)
		}
	}

	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(wait),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		nats.RetryOnFailedConnect(true),
		// A large buffer lets publishes made during a short outage wait for
		// the reconnect instead of failing at once.
		nats.ReconnectBufSize(64 << 20),
		nats.ConnectHandler(func(nc *nats.Conn) {
			connected.Set(1)
			log.Info("nats connected", "server", nc.ConnectedUrlRedacted())
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			connected.Set(0)
			log.Warn("nats disconnected", "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			connected.Set(1)
			log.Info("nats reconnected", "server", nc.ConnectedUrlRedacted())
		}),
		// A failed attempt is reported once per distinct error and then at
		// most once a minute: an outage must be visible (a wrong password
		// reads "authorization violation") without a line per second.
		nats.ReconnectErrHandler(attemptLogger(log, time.Minute)),
		// nats.go gives up for good after the same authentication error
		// twice. A daemon must not: the operator fixes the credentials on
		// the server and webhookd recovers without a restart.
		nats.IgnoreAuthErrorAbort(),
		nats.ClosedHandler(func(nc *nats.Conn) {
			connected.Set(0)
			log.Info("nats connection closed", "err", nc.LastError())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			log.Error("nats async error", "subject", subject, "err", err)
		}),
	}
	switch {
	case cfg.CredsFile != "":
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	case cfg.NKeySeedFile != "":
		opt, err := nats.NkeyOptionFromSeed(cfg.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("natsconn: nkey seed file: %w", err)
		}
		opts = append(opts, opt)
	case cfg.User != "":
		opts = append(opts, nats.UserInfo(cfg.User, cfg.Password))
	case cfg.Token != "":
		opts = append(opts, nats.Token(cfg.Token))
	}
	if cfg.InProcess != nil {
		opts = append(opts, nats.InProcessServer(cfg.InProcess))
	}
	if cfg.CAFile != "" {
		opts = append(opts, nats.RootCAs(cfg.CAFile))
	}
	if cfg.CertFile != "" {
		opts = append(opts, nats.ClientCert(cfg.CertFile, cfg.KeyFile))
	}
	nc, err := nats.Connect(cfg.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("natsconn: connect: %w", err)
	}
	if nc.IsConnected() {
		connected.Set(1)
	} else {
		log.Warn("nats not reachable yet, retrying in the background", "err", nc.LastError())
	}
	return nc, nil
}

// attemptLogger returns a handler for failed connection attempts that logs
// each new error at once and repeats an unchanged one at most every quiet.
func attemptLogger(log *slog.Logger, quiet time.Duration) nats.ConnErrHandler {
	var (
		mu     sync.Mutex
		last   string
		logged time.Time
		missed int
	)
	return func(_ *nats.Conn, err error) {
		if err == nil {
			return
		}
		mu.Lock()
		msg := err.Error()
		if msg == last && time.Since(logged) < quiet {
			missed++
			mu.Unlock()
			return
		}
		repeats := missed
		last, logged, missed = msg, time.Now(), 0
		mu.Unlock()
		log.Warn("nats connect attempt failed", "err", err, "repeats_since_last_log", repeats)
	}
}
