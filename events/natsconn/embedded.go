package natsconn

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// EmbeddedConfig configures the in-process NATS server that `go run
// ./cmd/webhookd` starts when no external server is given.
type EmbeddedConfig struct {
	// Listen is the client address, "host:port". Zero means 127.0.0.1:4222.
	// Port 0 picks a free port (see Embedded.ClientURL).
	Listen string
	// StoreDir holds JetStream's files. Required.
	StoreDir string
	// MaxStore caps JetStream file storage: everything webhookd keeps in
	// NATS together (events, delivery jobs, the shared registry, health,
	// failure records). capacity.Budget splits the same number between
	// the streams, whose byte limits the server then reserves out of it.
	// Zero means 10 GiB; negative is an error.
	MaxStore int64
	// MaxMemory caps JetStream memory storage. webhookd keeps no stream in
	// memory, so this bounds nothing of its own (and not the server's
	// heap). Zero means 256 MiB; negative is an error.
	MaxMemory int64
	// MaxPayload is the largest message the server accepts, headers
	// included. A delivery job is the event plus up to a few KiB of
	// headers, so keep it well above the largest event accepted. Zero
	// means 8 MiB; at most 64 MiB (the server's own limit).
	MaxPayload int32
	// User and Password, or Token, make the server require them of every
	// client (the in-process one included). The daemon refuses to listen
	// beyond loopback without one of them. At most one kind may be set.
	User, Password, Token string
	// SyncAlways makes JetStream fsync every write, trading throughput for
	// durability across power loss (the default syncs every 2 minutes).
	SyncAlways bool
	// StartTimeout bounds the wait for the server to accept clients.
	// Zero means 10s.
	StartTimeout time.Duration
	// Logger receives the server's notices and errors. Nil: slog.Default().
	Logger *slog.Logger
}

// Defaults of the zero EmbeddedConfig limits.
const (
	DefaultMaxStore   = 10 << 30
	DefaultMaxMemory  = 256 << 20
	DefaultMaxPayload = 8 << 20
)

// Embedded is a running in-process NATS server.
type Embedded struct {
	srv *server.Server
}

// StartEmbedded starts a NATS server with JetStream bound to loopback (by
// default) and waits until it accepts clients.
func StartEmbedded(cfg EmbeddedConfig) (*Embedded, error) {
	if cfg.StoreDir == "" {
		return nil, errors.New("natsconn: embedded server needs a store directory")
	}
	listen := cfg.Listen
	if listen == "" {
		listen = "127.0.0.1:4222"
	}
	host, portStr, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("natsconn: embedded listen address %q: %w", listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return nil, fmt.Errorf("natsconn: embedded listen port %q is not a port number", portStr)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	maxStore, maxMem, maxPayload := cfg.MaxStore, cfg.MaxMemory, cfg.MaxPayload
	if maxStore < 0 || maxMem < 0 || maxPayload < 0 || maxPayload > 64<<20 {
		return nil, fmt.Errorf("natsconn: embedded server limits out of range: MaxStore %d, MaxMemory %d, MaxPayload %d (0 to 64 MiB)",
			maxStore, maxMem, maxPayload)
	}
	if maxStore == 0 {
		maxStore = DefaultMaxStore
	}
	if maxMem == 0 {
		maxMem = DefaultMaxMemory
	}
	if maxPayload == 0 {
		maxPayload = DefaultMaxPayload
	}
	if (cfg.User == "") != (cfg.Password == "") || cfg.Token != "" && cfg.User != "" {
		return nil, errors.New("natsconn: embedded server auth is user and password together, or a token")
	}
	timeout := cfg.StartTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	opts := &server.Options{
		ServerName:         "webhookd-embedded",
		Host:               host,
		Port:               port,
		JetStream:          true,
		StoreDir:           filepath.Clean(cfg.StoreDir),
		JetStreamMaxStore:  maxStore,
		JetStreamMaxMemory: maxMem,
		SyncAlways:         cfg.SyncAlways,
		// webhookd owns signal handling and shuts the server down in order.
		NoSigs:          true,
		NoSystemAccount: true,
		MaxPayload:      maxPayload,
		Username:        cfg.User,
		Password:        cfg.Password,
		Authorization:   cfg.Token,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("natsconn: embedded server: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	srv.SetLoggerV2(&serverLogger{log: log.With("component", "nats-server")}, false, false, false)
	go srv.Start()
	if !srv.ReadyForConnections(timeout) {
		srv.Shutdown()
		return nil, fmt.Errorf("natsconn: embedded server did not accept clients on %s within %s (is the port taken?)", listen, timeout)
	}
	return &Embedded{srv: srv}, nil
}

// ClientURL is the URL clients use to reach the server.
func (e *Embedded) ClientURL() string { return e.srv.ClientURL() }

// Server exposes the underlying server for in-process connections.
func (e *Embedded) Server() *server.Server { return e.srv }

// Shutdown stops the server and waits until it has flushed JetStream.
func (e *Embedded) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}

// serverLogger adapts nats-server's logger to slog. Notices are Debug so a
// healthy start is quiet at the default level.
type serverLogger struct{ log *slog.Logger }

func (l *serverLogger) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *serverLogger) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l *serverLogger) Fatalf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l *serverLogger) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l *serverLogger) Debugf(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *serverLogger) Tracef(format string, v ...any)  {}
