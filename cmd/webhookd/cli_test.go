package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseOptionsEnvAndFlags(t *testing.T) {
	env := map[string]string{
		"WEBHOOKD_RETRY_MAX_AGE":         "1h",
		"WEBHOOKD_HTTP_ADDR":             "127.0.0.1:9999",
		"WEBHOOKD_ALLOW_PRIVATE_TARGETS": "true",
		"WEBHOOKD_RETRY_MAX_ATTEMPTS":    "7",
	}
	o, err := parseOptions([]string{"--http-addr", "127.0.0.1:7777"}, func(k string) string { return env[k] }, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if o.httpAddr != "127.0.0.1:7777" {
		t.Errorf("flag must win over env: %q", o.httpAddr)
	}
	if o.retryMaxAge != time.Hour || !o.allowPrivate || o.retryMaxTries != 7 {
		t.Errorf("env twins not applied: %+v", o)
	}
	if o.deliveryTO != 15*time.Second || o.retryInitial != 5*time.Second || o.retryMaxIvl != 4*time.Hour || o.subjectPrefix != "events" {
		t.Errorf("defaults differ from DESIGN §1: %+v", o)
	}
}

func TestBadOptionsNameTheFlag(t *testing.T) {
	cases := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--delivery-timeout", "soon"}, nil, "delivery-timeout"},
		{[]string{"--delivery-timeout", "-1s"}, nil, "--delivery-timeout"},
		{[]string{"--retry-max-attempts", "-2"}, nil, "--retry-max-attempts"},
		{[]string{"--log-level", "loud"}, nil, "--log-level"},
		{[]string{"--no-such-flag"}, nil, "no-such-flag"},
		{nil, map[string]string{"WEBHOOKD_RETRY_INITIAL": "x"}, "WEBHOOKD_RETRY_INITIAL"},
		{[]string{"--retry-initial", "1h", "--retry-max-interval", "1m"}, nil, "--retry-max-interval"},
		{[]string{"stray"}, nil, "stray"},
		{[]string{"--registry-bucket", "a.b"}, nil, "--registry-bucket"},
		{[]string{"--failures-stream", "a b"}, nil, "--failures-stream"},
		{[]string{"--failures-per-webhook", "0"}, nil, "--failures-per-webhook"},
		{[]string{"--registry-tombstone-grace", "1s"}, nil, "--registry-tombstone-grace"},
		// The breaker and auto-disable: nonsense exits naming the flag, not a
		// silent default.
		{[]string{"--circuit-failures", "0"}, nil, "--circuit-failures"},
		{[]string{"--circuit-timeouts", "-1"}, nil, "--circuit-timeouts"},
		{[]string{"--circuit-cooldown", "0s"}, nil, "--circuit-cooldown"},
		{[]string{"--circuit-cooldown", "1m", "--circuit-max-cooldown", "30s"}, nil, "--circuit-max-cooldown"},
		{[]string{"--disable-after", "-1h"}, nil, "--disable-after"},
		// Open doors: debug listeners and the embedded NATS beyond loopback.
		{[]string{"--admin-addr", "0.0.0.0:9000"}, nil, "--admin-addr"},
		{[]string{"--admin-addr", ":9000"}, nil, "--admin-addr"},
		{[]string{"--pprof-addr", "10.1.2.3:6060"}, nil, "--pprof-addr"},
		{nil, map[string]string{"WEBHOOKD_PPROF_ADDR": "[::]:6060"}, "--pprof-addr"},
		{[]string{"--nats-listen", "0.0.0.0:4222"}, nil, "--nats-listen"},
		{[]string{"--nats-listen", ":4222"}, nil, "no authentication"},
	}
	for _, c := range cases {
		_, err := parseOptions(c.args, func(k string) string { return c.env[k] }, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v %v: err = %v, want mention of %q", c.args, c.env, err, c.want)
		}
	}
}

// TestOpenDoorsNeedConsent: the refusals above have explicit ways out, and
// loopback stays allowed; secrets given as flags are noted for a warning.
func TestOpenDoorsNeedConsent(t *testing.T) {
	ok := [][]string{
		{"--admin-addr", "127.0.0.1:9000", "--pprof-addr", "[::1]:6060"},
		{"--admin-addr", "localhost:9000"},
		{"--admin-addr", "0.0.0.0:9000", "--allow-public-debug"},
		{"--nats-listen", "0.0.0.0:4222", "--nats-user", "u", "--nats-password", "p"},
		{"--nats-listen", "0.0.0.0:4222", "--nats-token", "t"},
		{"--nats-listen", "0.0.0.0:4222", "--nats-url", "nats://elsewhere:4222"}, // not embedded
	}
	for _, args := range ok {
		if _, err := parseOptions(args, func(string) string { return "" }, &bytes.Buffer{}); err != nil {
			t.Errorf("%v: %v", args, err)
		}
	}
	o, err := parseOptions([]string{"--api-keys", "acme:k", "--encryption-key", strings.Repeat("ab", 32)},
		func(k string) string { return map[string]string{"WEBHOOKD_NATS_TOKEN": "t"}[k] }, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(o.secretFlags, " "); got != "--api-keys --encryption-key" {
		t.Errorf("secret flags noted: %q (the token came from the environment)", got)
	}
}

func TestBinaryFlagsAndHelp(t *testing.T) {
	out, err := exec.Command(binPath, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("--help: %v\n%s", err, out)
	}
	for _, want := range []string{"--retry-max-age", "WEBHOOKD_RETRY_MAX_AGE", "default 72h0m0s", "WEBHOOKD_NATS_URL"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("--help lacks %q", want)
		}
	}
	cmd := exec.Command(binPath, "--delivery-timeout", "nope")
	out, _ = cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 2 || !bytes.Contains(out, []byte("delivery-timeout")) {
		t.Errorf("bad flag: exit %d, output %q", code, out)
	}
	out, err = exec.Command(binPath, "version").Output()
	if err != nil || !bytes.HasPrefix(out, []byte("webhookd ")) {
		t.Errorf("version: %q %v", out, err)
	}
}

// TestLockedDataDir: a second process on the same data dir fails fast and
// says why.
func TestLockedDataDir(t *testing.T) {
	d := newDaemon(t)
	d.start()
	second := exec.Command(binPath, "--data-dir", d.dataDir, "--http-addr", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0")
	start := time.Now()
	out, err := second.CombinedOutput()
	took := time.Since(start)
	if err == nil {
		t.Fatal("second process on a locked data dir exited 0")
	}
	if took > 10*time.Second {
		t.Errorf("second process took %s to give up", took)
	}
	if !bytes.Contains(bytes.ToLower(out), []byte("lock")) {
		t.Errorf("message does not name the lock: %q", out)
	}
}

// TestBootstrapKey: a first start without keys writes a usable key to a
// 0600 file and logs the path, never the key.
func TestBootstrapKey(t *testing.T) {
	dir := t.TempDir()
	httpAddr := "127.0.0.1:" + itoa(freePort(t))
	natsAddr := "127.0.0.1:" + itoa(freePort(t))
	d := &daemon{t: t, dataDir: dir, httpAddr: httpAddr, natsAddr: natsAddr}
	d.cmd = exec.Command(binPath, "--data-dir", dir, "--http-addr", httpAddr, "--nats-listen", natsAddr)
	d.logs = &syncBuffer{}
	d.cmd.Stdout, d.cmd.Stderr = d.logs, d.logs
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d.exited = make(chan error, 1)
	go func() { d.exited <- d.cmd.Wait() }()
	t.Cleanup(func() { _ = d.cmd.Process.Kill(); <-d.exited })
	d.waitReady(30 * time.Second)

	path := filepath.Join(dir, "bootstrap-api-key")
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("bootstrap key file mode %v, want 0600", fi.Mode().Perm())
	}
	raw, _ := os.ReadFile(path)
	key := strings.TrimSuffix(string(raw), "\n")
	if key == "" || strings.Contains(key, "\n") {
		t.Fatalf("bootstrap file content %q", raw)
	}
	if strings.Contains(d.logs.String(), key) {
		t.Error("the bootstrap key appears in the logs")
	}
	if !strings.Contains(d.logs.String(), path) {
		t.Error("the logs do not name the bootstrap key file")
	}
	d.apiKey = key
	body, _ := json.Marshal(map[string]string{"url": "https://example.com/hook", "eventType": "workflowRun.completed"})
	status, out := d.api(http.MethodPost, "/api/webhook", body)
	if status != 200 {
		t.Fatalf("register with bootstrap key: %d %s", status, out)
	}
	// The registration and the key survive a restart.
	if code, _ := d.term(20 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	d.cmd = exec.Command(binPath, "--data-dir", dir, "--http-addr", httpAddr, "--nats-listen", natsAddr)
	d.cmd.Stdout, d.cmd.Stderr = d.logs, d.logs
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d.exited = make(chan error, 1)
	go func() { d.exited <- d.cmd.Wait() }()
	d.waitReady(30 * time.Second)
	status, out = d.api(http.MethodGet, "/api/webhook", nil)
	if status != 200 || !bytes.Contains(out, []byte("https://example.com/hook")) {
		t.Fatalf("after restart: %d %s", status, out)
	}
	raw2, _ := os.ReadFile(path)
	if string(raw2) != string(raw) {
		t.Error("bootstrap key was rewritten on restart")
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestEnvExampleListsEveryFlag keeps deploy/webhookd.env.example in step
// with the flags.
func TestEnvExampleListsEveryFlag(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "deploy", "webhookd.env.example"))
	if err != nil {
		t.Fatal(err)
	}
	var o options
	fs := newFlagSet(&o, &bytes.Buffer{})
	fs.VisitAll(func(f *flag.Flag) {
		if !strings.Contains(string(raw), envName(f.Name)+"=") {
			t.Errorf("deploy/webhookd.env.example lacks %s", envName(f.Name))
		}
	})
}
