package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/webhookd/webhookd/registry"
)

func pprofMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// adminMux serves a hot backup of the registry. It holds every workspace's
// secrets, hence its own listener, meant for loopback.
func adminMux(store *registry.Store, log *slog.Logger) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /admin/backup", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Disposition", `attachment; filename="webhookd.db"`)
		if n, err := store.Backup(w); err != nil {
			log.Error("hot backup failed", "bytes", n, "err", err)
		}
	})
	return mux
}

// serveAux runs an auxiliary listener (pprof, admin) until stop is called.
func serveAux(addr string, mux *http.ServeMux, log *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	s := auxServer(mux)
	go func() {
		if err := s.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("auxiliary listener", "addr", addr, "err", err)
		}
	}()
	log.Info("auxiliary listener", "addr", ln.Addr().String())
	return func() { _ = s.Close() }, nil
}

// auxServer is the HTTP server of an auxiliary listener. A backup streams
// the whole registry file and a CPU profile runs 30 s by default: its
// timeouts are generous, but bounded, so that a stalled or slow-loris
// client cannot hold a connection for ever.
func auxServer(h http.Handler) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 10 * time.Minute, IdleTimeout: time.Minute}
}
