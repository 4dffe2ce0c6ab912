package transport

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/webhookd/webhookd/registry/ssrf"
)

// open lets the tests reach their 127.0.0.1 servers.
var open = &ssrf.Guard{AllowPrivate: true}

func newClient(t *testing.T, cfg Config) *http.Client {
	t.Helper()
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

func post(t *testing.T, c *http.Client, url string) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, url, strings.NewReader(`{"a":1}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	return c.Do(req)
}

func TestNewClientSettings(t *testing.T) {
	pool := x509.NewCertPool()
	c := newClient(t, Config{Timeout: 2 * time.Second, MaxConnsPerHost: 7, RootCAs: pool})
	tr := c.Transport.(*limitTransport).base
	switch {
	case c.Timeout != 0 || c.Transport.(*limitTransport).timeout != 2*time.Second:
		t.Errorf("Client.Timeout = %s, transport's = %s: the transport bounds requests, the client must not (a goroutine each)",
			c.Timeout, c.Transport.(*limitTransport).timeout)
	case tr.Proxy != nil:
		t.Error("Proxy must be nil so no environment proxy bypasses the guard")
	case !tr.DisableCompression:
		t.Error("DisableCompression must be true")
	case !tr.ForceAttemptHTTP2:
		t.Error("ForceAttemptHTTP2 must be true")
	case tr.MaxConnsPerHost != 7 || tr.MaxIdleConnsPerHost != 7:
		t.Errorf("per-host conns = %d/%d, want 7/7", tr.MaxConnsPerHost, tr.MaxIdleConnsPerHost)
	case tr.ResponseHeaderTimeout != 2*time.Second:
		t.Errorf("ResponseHeaderTimeout = %s", tr.ResponseHeaderTimeout)
	case tr.TLSHandshakeTimeout != 2*time.Second:
		t.Errorf("TLSHandshakeTimeout = %s, want min(5s, Timeout)", tr.TLSHandshakeTimeout)
	case tr.TLSClientConfig.MinVersion != tls.VersionTLS12 || tr.TLSClientConfig.RootCAs != pool:
		t.Error("TLS config must carry RootCAs and MinVersion TLS 1.2")
	}
	d := newClient(t, Config{})
	if d.Transport.(*limitTransport).timeout != DefaultTimeout || d.Transport.(*limitTransport).limit != DefaultMaxResponseBytes ||
		d.Transport.(*limitTransport).base.MaxConnsPerHost != DefaultMaxConnsPerHost {
		t.Errorf("zero Config did not get the defaults")
	}
	for _, bad := range []Config{{Timeout: -1}, {MaxConnsPerHost: -1}, {MaxResponseBytes: -1}} {
		if _, err := NewClient(bad); err == nil {
			t.Errorf("NewClient(%+v) accepted a negative value", bad)
		}
	}
}

func TestRedirectNotFollowed(t *testing.T) {
	var targetHits atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		targetHits.Add(1)
	}))
	t.Cleanup(target.Close)
	for _, code := range []int{http.StatusMovedPermanently, http.StatusFound, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, target.URL+"/elsewhere", code)
		}))
		resp, err := post(t, newClient(t, Config{Guard: open}), redirector.URL)
		if err != nil {
			t.Fatalf("%d: %v", code, err)
		}
		_ = Drain(resp.Body, 1024)
		redirector.Close()
		if resp.StatusCode != code {
			t.Errorf("status = %d, want the %d itself", resp.StatusCode, code)
		}
	}
	if n := targetHits.Load(); n != 0 {
		t.Fatalf("redirect target was hit %d times", n)
	}
}

func TestDialTimeGuard(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	t.Cleanup(srv.Close)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())

	tests := []struct {
		name    string
		guard   *ssrf.Guard
		host    string
		blocked bool
	}{
		{"nil guard refuses 127.0.0.1", nil, "127.0.0.1", true},
		{"zero guard refuses 127.0.0.1", &ssrf.Guard{}, "127.0.0.1", true},
		{"name resolving to loopback refused after DNS", nil, "localhost", true},
		{"AllowPrivate reaches 127.0.0.1", open, "127.0.0.1", false},
		{"AllowPrivate reaches localhost", open, "localhost", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := hits.Load()
			resp, err := post(t, newClient(t, Config{Guard: tc.guard}), "http://"+net.JoinHostPort(tc.host, port)+"/")
			if tc.blocked {
				if !errors.Is(err, ssrf.ErrBlocked) {
					t.Fatalf("err = %v, want ErrBlocked", err)
				}
				if hits.Load() != before {
					t.Fatal("blocked request reached the server")
				}
				return
			}
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			_ = Drain(resp.Body, 1024)
			if resp.StatusCode != http.StatusOK || hits.Load() != before+1 {
				t.Fatalf("status %d, hits %d->%d", resp.StatusCode, before, hits.Load())
			}
		})
	}
}

func TestHangingServerTimesOut(t *testing.T) {
	for _, phase := range []string{"headers", "body"} {
		t.Run(phase, func(t *testing.T) {
			release := make(chan struct{})
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				// Reading the request to its end lets the server notice
				// the client hanging up (r.Context() is then cancelled).
				_, _ = io.Copy(io.Discard, r.Body)
				if phase == "body" {
					w.WriteHeader(http.StatusOK)
					_, _ = w.Write([]byte("partial"))
					w.(http.Flusher).Flush()
				}
				select {
				case <-release:
				case <-r.Context().Done():
				}
			}))
			t.Cleanup(srv.Close)
			t.Cleanup(func() { close(release) }) // runs first: unblock before Close waits
			c := newClient(t, Config{Guard: open, Timeout: 300 * time.Millisecond})
			start := time.Now()
			resp, err := post(t, c, srv.URL)
			if err == nil {
				_, err = io.ReadAll(resp.Body)
				_ = resp.Body.Close()
			}
			elapsed := time.Since(start)
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("err = %v, want a timeout", err)
			}
			// Generous bound: the point is that it ends, not how precisely.
			if elapsed > 10*time.Second {
				t.Fatalf("took %s with a 300ms timeout", elapsed)
			}
		})
	}
}

// endless writes until the client goes away and counts what it wrote.
func endless(written *atomic.Int64) http.HandlerFunc {
	chunk := bytes.Repeat([]byte("x"), 32<<10)
	return func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusOK)
		for r.Context().Err() == nil {
			n, err := w.Write(chunk)
			written.Add(int64(n))
			if err != nil {
				return
			}
		}
	}
}

type countingBody struct {
	io.ReadCloser
	n int64
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n += int64(n)
	return n, err
}

func TestHugeBody(t *testing.T) {
	var written atomic.Int64
	srv := httptest.NewServer(endless(&written))
	t.Cleanup(srv.Close)

	t.Run("Drain stops at its limit", func(t *testing.T) {
		c := newClient(t, Config{Guard: open, MaxResponseBytes: 1 << 30})
		resp, err := post(t, c, srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		body := &countingBody{ReadCloser: resp.Body}
		if err := Drain(body, 64<<10); err != nil {
			t.Fatalf("Drain: %v", err)
		}
		if body.n != 64<<10 {
			t.Fatalf("Drain read %d bytes, want exactly the 64 KiB limit", body.n)
		}
	})
	t.Run("client caps any reader", func(t *testing.T) {
		c := newClient(t, Config{Guard: open, MaxResponseBytes: 10000})
		resp, err := post(t, c, srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil || len(got) != 10000 {
			t.Fatalf("ReadAll = %d bytes, %v; want 10000, nil", len(got), err)
		}
	})
	t.Logf("server managed to write %d bytes before the client hung up", written.Load())
}

func TestDrainShortBodyReusesConnection(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("ok"))
	}))
	t.Cleanup(srv.Close)
	c := newClient(t, Config{Guard: open})
	var reused []bool
	for range 2 {
		trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = append(reused, i.Reused) }}
		ctx := httptrace.WithClientTrace(context.Background(), trace)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL, strings.NewReader("{}"))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if err := Drain(resp.Body, 1024); err != nil {
			t.Fatal(err)
		}
	}
	if len(reused) != 2 || reused[0] || !reused[1] {
		t.Fatalf("connection reuse = %v, want [false true]", reused)
	}
}

type failingBody struct{ readErr, closeErr error }

func (f failingBody) Read([]byte) (int, error) { return 0, f.readErr }
func (f failingBody) Close() error             { return f.closeErr }

func TestDrainErrors(t *testing.T) {
	boom, shut := errors.New("boom"), errors.New("shut")
	if err := Drain(nil, 10); err != nil {
		t.Errorf("Drain(nil) = %v", err)
	}
	if err := Drain(failingBody{readErr: io.EOF}, 10); err != nil {
		t.Errorf("Drain(empty) = %v", err)
	}
	if err := Drain(failingBody{readErr: boom}, 10); !errors.Is(err, boom) {
		t.Errorf("Drain(read error) = %v", err)
	}
	if err := Drain(failingBody{readErr: boom, closeErr: shut}, 10); !errors.Is(err, boom) || !errors.Is(err, shut) {
		t.Errorf("Drain(both errors) = %v", err)
	}
	if err := Drain(failingBody{readErr: boom, closeErr: shut}, 0); errors.Is(err, boom) || !errors.Is(err, shut) {
		t.Errorf("Drain(limit 0) = %v, want only the close error", err)
	}
}

func TestNoTransparentDecompression(t *testing.T) {
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write(bytes.Repeat([]byte{0}, 1<<20))
	_ = zw.Close()
	var acceptEncoding atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		acceptEncoding.Store(r.Header.Get("Accept-Encoding"))
		w.Header().Set("Content-Encoding", "gzip")
		_, _ = w.Write(gz.Bytes())
	}))
	t.Cleanup(srv.Close)
	resp, err := post(t, newClient(t, Config{Guard: open}), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.Uncompressed || !bytes.Equal(got, gz.Bytes()) {
		t.Fatalf("body was decompressed (%d bytes, Uncompressed=%v)", len(got), resp.Uncompressed)
	}
	if ae := acceptEncoding.Load(); ae != "" {
		t.Fatalf("client asked for Accept-Encoding %q", ae)
	}
}

func TestTLS(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
		srv.EnableHTTP2 = h2
		srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes are expected
		srv.StartTLS()
		t.Cleanup(srv.Close)

		_, err := post(t, newClient(t, Config{Guard: open}), srv.URL)
		var verr *tls.CertificateVerificationError
		if !errors.As(err, &verr) {
			t.Fatalf("self-signed server with system roots: err = %v, want a certificate verification error", err)
		}

		pool := x509.NewCertPool()
		pool.AddCert(srv.Certificate())
		resp, err := post(t, newClient(t, Config{Guard: open, RootCAs: pool}), srv.URL)
		if err != nil {
			t.Fatalf("with the server's cert as root: %v", err)
		}
		_ = Drain(resp.Body, 1024)
		if want := map[bool]int{false: 1, true: 2}[h2]; resp.ProtoMajor != want {
			t.Errorf("EnableHTTP2=%v: negotiated HTTP/%d", h2, resp.ProtoMajor)
		}
	}
}
