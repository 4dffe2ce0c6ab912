package main

import (
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startPlain starts the binary with exactly args (plus the data dir and
// addresses of d) and env, without newDaemon's --api-keys flag.
func startPlain(t *testing.T, d *daemon, env []string, args ...string) {
	t.Helper()
	d.cmd = exec.Command(binPath, append([]string{"--data-dir", d.dataDir, "--http-addr", d.httpAddr, "--nats-listen", d.natsAddr}, args...)...)
	d.cmd.Env = append(os.Environ(), env...)
	if d.logs == nil {
		d.logs = &syncBuffer{}
	}
	d.cmd.Stdout, d.cmd.Stderr = d.logs, d.logs
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d.exited = make(chan error, 1)
	go func(c *exec.Cmd, ch chan error) { ch <- c.Wait() }(d.cmd, d.exited)
	d.waitReady(30 * time.Second)
}

// TestBootstrapRetiredByConfiguredKey: a default: key added to --api-keys
// after the first start retires the bootstrap key, with or without the
// shared key bucket; a key for another workspace does not.
func TestBootstrapRetiredByConfiguredKey(t *testing.T) {
	d := newDaemon(t)
	startPlain(t, d, nil) // first start, no key configured: a bootstrap key
	raw, err := os.ReadFile(filepath.Join(d.dataDir, "bootstrap-api-key"))
	if err != nil {
		t.Fatal(err)
	}
	bootstrap := strings.TrimSpace(string(raw))
	status := func(key string) int {
		d.apiKey = key
		s, _ := d.api(http.MethodGet, "/api/webhook", nil)
		return s
	}
	if s := status(bootstrap); s != http.StatusOK {
		t.Fatalf("bootstrap key on the first start: %d", s)
	}
	const acmeKey, defaultKey = "acme-configured-key-0123456789", "default-configured-key-0123456789"
	for _, tc := range []struct {
		name     string
		args     []string
		wantBoot int
	}{
		{"a key for another workspace", []string{"--api-keys", "acme:" + acmeKey}, http.StatusOK},
		{"a key for default", []string{"--api-keys", "acme:" + acmeKey + ",default:" + defaultKey}, http.StatusUnauthorized},
		{"a key for default, no shared key bucket", []string{"--keys-bucket", "", "--api-keys", "default:" + defaultKey}, http.StatusUnauthorized},
		{"the bootstrap key itself configured", []string{"--api-keys", "default:" + bootstrap}, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if code, _ := d.term(20 * time.Second); code != 0 {
				t.Fatalf("stopping: exit %d", code)
			}
			startPlain(t, d, nil, tc.args...)
			if s := status(bootstrap); s != tc.wantBoot {
				t.Errorf("bootstrap key: %d, want %d", s, tc.wantBoot)
			}
			for _, kv := range strings.Split(tc.args[len(tc.args)-1], ",") {
				if _, key, _ := strings.Cut(kv, ":"); status(key) != http.StatusOK {
					t.Errorf("configured key %s…: refused", key[:8])
				}
			}
		})
	}
}

// TestSecretFlagsWarned: the binary warns about secrets given as flags,
// naming the flags and never their values, and says nothing when they come
// from the environment.
func TestSecretFlagsWarned(t *testing.T) {
	const encKey = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	d := newDaemon(t, "--encryption-key", encKey)
	d.start()
	logs := d.logs.String()
	warn := ""
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, "secrets given as command-line flags") {
			warn = l
		}
	}
	if !strings.Contains(warn, "level=WARN") || !strings.Contains(warn, "flags=--api-keys,--encryption-key") {
		t.Errorf("warning %q, want a WARN naming --api-keys and --encryption-key", warn)
	}
	if strings.Contains(logs, encKey) || strings.Contains(logs, d.apiKey) {
		t.Error("a secret's value reached the logs")
	}

	e := newDaemon(t)
	startPlain(t, e, []string{"WEBHOOKD_API_KEYS=acme:" + e.apiKey, "WEBHOOKD_ENCRYPTION_KEY=" + encKey})
	if strings.Contains(e.logs.String(), "secrets given as command-line flags") {
		t.Errorf("warned with every secret in the environment:\n%s", e.logs.String())
	}
}

// TestAuxServerTimeouts: the admin and pprof listeners bound every phase
// of a connection, and the running admin listener drops a client that
// never finishes its headers.
func TestAuxServerTimeouts(t *testing.T) {
	s := auxServer(http.NewServeMux())
	if s.ReadHeaderTimeout <= 0 || s.WriteTimeout <= 0 || s.IdleTimeout <= 0 {
		t.Fatalf("aux server timeouts: read-header %s, write %s, idle %s; want all set", s.ReadHeaderTimeout, s.WriteTimeout, s.IdleTimeout)
	}
	if s.WriteTimeout < time.Minute {
		t.Errorf("write timeout %s would cut a backup of a large registry short", s.WriteTimeout)
	}
	if testing.Short() {
		t.Skip("the live check takes the 5 s header timeout")
	}
	admin := "127.0.0.1:" + itoa(freePort(t))
	d := newDaemon(t, "--admin-addr", admin)
	d.start()
	c, err := net.Dial("tcp", admin)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("GET /admin/backup HTTP/1.1\r\nHost: x\r\nX-Slow: ")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(s.ReadHeaderTimeout + 5*time.Second))
	buf := make([]byte, 256)
	for {
		if _, err := c.Read(buf); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("the admin listener kept a half-sent request open for %s", time.Since(start))
			}
			break
		}
	}
	if took := time.Since(start); took < s.ReadHeaderTimeout-time.Second {
		t.Errorf("closed after %s, before the header timeout", took)
	}
}
