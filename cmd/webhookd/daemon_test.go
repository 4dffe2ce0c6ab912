package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// binPath is the webhookd binary built once for the end-to-end tests.
var binPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "webhookd-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath = filepath.Join(dir, "webhookd")
	build := exec.Command("go", "build", "-o", binPath, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building webhookd:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// daemon is one webhookd process under test.
type daemon struct {
	t        *testing.T
	dataDir  string
	httpAddr string
	natsAddr string
	apiKey   string
	extra    []string
	env      []string // extra environment, e.g. fault hooks
	// externalNATS, when set, is passed as --nats-url instead of running the
	// embedded server.
	externalNATS string
	cmd          *exec.Cmd
	logs         *syncBuffer
	exited       chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newDaemon(t *testing.T, extra ...string) *daemon {
	d := &daemon{
		t:        t,
		dataDir:  t.TempDir(),
		httpAddr: fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		natsAddr: fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		apiKey:   "test-key-0123456789abcdef",
		extra:    extra,
	}
	t.Cleanup(func() {
		if d.cmd != nil && d.cmd.ProcessState == nil {
			_ = d.cmd.Process.Kill()
			<-d.exited
		}
		if t.Failed() {
			t.Logf("daemon logs:\n%s", tail(d.logs.String(), 4000))
		}
	})
	return d
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func (d *daemon) args() []string {
	nats := []string{"--nats-listen", d.natsAddr}
	if d.externalNATS != "" {
		nats = []string{"--nats-url", d.externalNATS}
	}
	return append(append([]string{
		"--data-dir", d.dataDir, "--http-addr", d.httpAddr,
		"--api-keys", "acme:" + d.apiKey, "--allow-private-targets", "--log-level", "debug",
	}, nats...), d.extra...)
}

func (d *daemon) start() {
	d.t.Helper()
	d.cmd = exec.Command(binPath, d.args()...)
	d.cmd.Env = append(os.Environ(), d.env...)
	if d.logs == nil {
		d.logs = &syncBuffer{}
	}
	d.cmd.Stdout, d.cmd.Stderr = d.logs, d.logs
	if err := d.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	d.exited = make(chan error, 1)
	go func(c *exec.Cmd, ch chan error) { ch <- c.Wait() }(d.cmd, d.exited)
	d.waitReady(30 * time.Second)
}

// readyStatus returns /readyz's status code, or 0 if nothing answers.
func (d *daemon) readyStatus() int {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + d.httpAddr + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func (d *daemon) waitReady(limit time.Duration) {
	d.t.Helper()
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		select {
		case err := <-d.exited:
			d.t.Fatalf("daemon exited before ready: %v\n%s", err, d.logs.String())
		default:
		}
		resp, err := http.Get("http://" + d.httpAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	d.t.Fatalf("daemon not ready after %s", limit)
}

func (d *daemon) kill9() {
	d.t.Helper()
	_ = d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.exited
}

// term sends SIGTERM and returns the exit code and how long it took.
func (d *daemon) term(limit time.Duration) (int, time.Duration) {
	d.t.Helper()
	start := time.Now()
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(limit):
		d.t.Fatalf("daemon still running %s after SIGTERM", limit)
	}
	return d.cmd.ProcessState.ExitCode(), time.Since(start)
}

// register creates a webhook through the API and returns its id and secret.
func (d *daemon) register(url, eventType, workflowID string) (id, secret string) {
	d.t.Helper()
	body, _ := json.Marshal(map[string]string{"url": url, "eventType": eventType, "workflowId": workflowID})
	status, out := d.api(http.MethodPost, "/api/webhook", body)
	if status != 200 {
		d.t.Fatalf("register: %d %s", status, out)
	}
	var env struct {
		Data struct{ ID, Secret string }
	}
	if err := json.Unmarshal(out, &env); err != nil {
		d.t.Fatal(err)
	}
	return env.Data.ID, env.Data.Secret
}

func (d *daemon) api(method, path string, body []byte) (int, []byte) {
	d.t.Helper()
	req, _ := http.NewRequestWithContext(context.Background(), method, "http://"+d.httpAddr+path, bytes.NewReader(body))
	req.Header.Set("x-copy-ai-api-key", d.apiKey)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		d.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

func (d *daemon) natsURL() string {
	if d.externalNATS != "" {
		return d.externalNATS
	}
	return "nats://" + d.natsAddr
}

// jetStream is a JetStream client on d's NATS, closed when the test ends.
func (d *daemon) jetStream() jetstream.JetStream {
	d.t.Helper()
	nc, err := nats.Connect(d.natsURL())
	if err != nil {
		d.t.Fatal(err)
	}
	d.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		d.t.Fatal(err)
	}
	return js
}

// deliverSome registers one verified subscription on d, publishes n events
// and waits until each has arrived with a good signature.
func deliverSome(t *testing.T, d *daemon, n int) {
	t.Helper()
	l := newLedger()
	recv := httptest.NewServer(http.HandlerFunc(l.handler))
	defer recv.Close()
	subscribe(t, d, l, recv.URL, 1)
	publishEvents(t, d.natsURL(), n)
	waitUntil(t, 20*time.Second, "deliveries", func() bool { return l.unique() >= n })
	l.check(t)
}
