// Package transport builds the HTTP client webhookd delivers with. It is
// hardened for talking to untrusted receivers: the SSRF guard runs at dial
// time on the resolved address, no proxy from the environment can bypass it,
// redirects are never followed, every phase has a timeout, response bodies
// are never decompressed and never read past a cap.
package transport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/webhookd/webhookd/registry/ssrf"
)

// Defaults applied to zero Config fields.
const (
	DefaultTimeout          = 15 * time.Second
	DefaultMaxConnsPerHost  = 64
	DefaultMaxResponseBytes = 64 << 10
)

// Fixed limits. They are not configurable because no receiver has a good
// reason to need more, and each bounds what a hostile one can make us do.
const (
	maxDialTimeout         = 5 * time.Second
	maxTLSHandshakeTimeout = 5 * time.Second
	keepAlive              = 30 * time.Second
	idleConnTimeout        = 90 * time.Second
	maxIdleConns           = 1024
	maxResponseHeaderBytes = 64 << 10
)

// Config configures NewClient.
type Config struct {
	// Timeout bounds a whole attempt: connect, TLS, request, response
	// headers and reading the body. Zero means 15s.
	Timeout time.Duration
	// Guard vets every address dialled, after DNS. Nil means SSRF
	// protection on (see ssrf.Guard).
	Guard *ssrf.Guard
	// MaxConnsPerHost caps connections (active and idle) to one host, so a
	// slow receiver only ties up its own share. Zero means 64.
	MaxConnsPerHost int
	// RootCAs verifies receivers' certificates. Nil means the system pool.
	RootCAs *x509.CertPool
	// MaxResponseBytes is how much of a response body can ever be read
	// through the client; further reads see io.EOF. Zero means 64 KiB.
	MaxResponseBytes int64
	// Resolver resolves receivers' host names. Nil means net.DefaultResolver.
	// Whatever it answers, Guard vets the resulting address at dial time.
	Resolver *net.Resolver
}

func (c Config) withDefaults() (Config, error) {
	if c.Timeout < 0 || c.MaxConnsPerHost < 0 || c.MaxResponseBytes < 0 {
		return c, errors.New("transport: Timeout, MaxConnsPerHost and MaxResponseBytes must not be negative")
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.MaxConnsPerHost == 0 {
		c.MaxConnsPerHost = DefaultMaxConnsPerHost
	}
	if c.MaxResponseBytes == 0 {
		c.MaxResponseBytes = DefaultMaxResponseBytes
	}
	return c, nil
}

// NewClient returns the delivery client. A 3xx response is returned to the
// caller as is; its Location is never followed, because the target of a
// redirect has not been vetted and a redirect would turn a delivery into a
// request the receiver chose.
func NewClient(cfg Config) (*http.Client, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	dialer := &net.Dialer{
		Timeout:   min(maxDialTimeout, cfg.Timeout),
		KeepAlive: keepAlive,
		Control:   cfg.Guard.Control, // nil *Guard is valid: protection on
		Resolver:  cfg.Resolver,
	}
	tr := &http.Transport{
		// An environment proxy would be dialled instead of the receiver, so
		// the guard would vet the proxy and the proxy would reach anything.
		Proxy:                  nil,
		DialContext:            dialer.DialContext,
		TLSClientConfig:        &tls.Config{RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:    min(maxTLSHandshakeTimeout, cfg.Timeout),
		ResponseHeaderTimeout:  cfg.Timeout,
		IdleConnTimeout:        idleConnTimeout,
		MaxIdleConns:           maxIdleConns,
		MaxIdleConnsPerHost:    cfg.MaxConnsPerHost,
		MaxConnsPerHost:        cfg.MaxConnsPerHost,
		MaxResponseHeaderBytes: maxResponseHeaderBytes,
		ForceAttemptHTTP2:      true, // a custom dialer and TLS config would otherwise disable it
		// The body is only read to be discarded; transparent gunzip would
		// let a small gzip bomb expand past MaxResponseBytes' intent.
		DisableCompression: true,
	}
	// The transport bounds each attempt itself (limitTransport.timeout):
	// http.Client.Timeout, with a RoundTripper that is not net/http's
	// own, costs a goroutine and a timer per request.
	return &http.Client{
		Transport: &limitTransport{base: tr, limit: cfg.MaxResponseBytes, timeout: cfg.Timeout, h1: &h1Transport{
			dial: dialer.DialContext, maxConns: cfg.MaxConnsPerHost, maxHeader: maxResponseHeaderBytes, idleTimeout: idleConnTimeout,
		}},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}, nil
}

// limitTransport caps what can be read from every response body, and how
// long a request may take, its body's reading included. Plain-http
// requests go through h1, the rest through base.
type limitTransport struct {
	base    *http.Transport
	h1      *h1Transport
	limit   int64
	timeout time.Duration
}

func (t *limitTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithTimeout(req.Context(), t.timeout)
	var rt http.RoundTripper = t.base
	if t.h1 != nil && t.h1.handles(req) {
		rt = t.h1
	}
	resp, err := rt.RoundTrip(req.WithContext(ctx))
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = &limitedBody{rc: resp.Body, left: t.limit, cancel: cancel}
	return resp, nil
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach the
// underlying transport.
func (t *limitTransport) CloseIdleConnections() {
	t.base.CloseIdleConnections()
	if t.h1 != nil {
		t.h1.CloseIdleConnections()
	}
}

type limitedBody struct {
	rc     io.ReadCloser
	left   int64
	cancel context.CancelFunc // ends the request's time limit
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *limitedBody) Close() error {
	err := b.rc.Close()
	b.cancel()
	return err
}

// Drain reads and discards at most limit bytes of body, then closes it.
// Reading a short body to its end lets the connection be reused; a longer
// one is cut off and its connection dropped, which is cheaper than reading
// what a receiver should not have sent. With a body from NewClient's client
// the read is bounded in time by Config.Timeout as well.
func Drain(body io.ReadCloser, limit int64) error {
	if body == nil {
		return nil
	}
	var readErr error
	if limit > 0 {
		if _, err := io.CopyN(io.Discard, body, limit); err != nil && !errors.Is(err, io.EOF) {
			readErr = fmt.Errorf("transport: drain response body: %w", err)
		}
	}
	if err := body.Close(); err != nil {
		return errors.Join(readErr, fmt.Errorf("transport: close response body: %w", err))
	}
	return readErr
}
