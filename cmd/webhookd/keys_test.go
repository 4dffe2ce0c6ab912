package main

import (
	"bytes"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestKeysCommand: `webhookd keys` against a running daemon's embedded
// NATS: a key created at run time works at once without a restart and
// retires the bootstrap key; revoking it shuts it out; --expires and the
// workspace guard work; usage errors exit 2.
func TestKeysCommand(t *testing.T) {
	dir := t.TempDir()
	d := &daemon{t: t, dataDir: dir, httpAddr: "127.0.0.1:" + itoa(freePort(t)), natsAddr: "127.0.0.1:" + itoa(freePort(t))}
	d.cmd = exec.Command(binPath, "--data-dir", dir, "--http-addr", d.httpAddr, "--nats-listen", d.natsAddr)
	d.logs = &syncBuffer{}
	d.cmd.Stdout, d.cmd.Stderr = d.logs, d.logs
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d.exited = make(chan error, 1)
	go func() { d.exited <- d.cmd.Wait() }()
	t.Cleanup(func() { _ = d.cmd.Process.Kill(); <-d.exited })
	d.waitReady(30 * time.Second)
	raw, err := os.ReadFile(filepath.Join(dir, "bootstrap-api-key"))
	if err != nil {
		t.Fatal(err)
	}
	bootstrap := strings.TrimSpace(string(raw))

	keys := func(wantCode int, args ...string) (stdout, stderr string) {
		t.Helper()
		cmd := exec.Command(binPath, append(append([]string{"keys"}, args...), "--nats-listen", d.natsAddr)...)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		if code := cmd.ProcessState.ExitCode(); code != wantCode {
			t.Fatalf("keys %v: exit %d (%v), want %d\nstdout: %s\nstderr: %s", args, code, err, wantCode, out.String(), errOut.String())
		}
		return out.String(), errOut.String()
	}
	status := func(key string) int {
		d.apiKey = key
		s, _ := d.api(http.MethodGet, "/api/webhook", nil)
		return s
	}
	within := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 1s", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	if s := status(bootstrap); s != http.StatusOK {
		t.Fatalf("bootstrap key before any shared key: %d", s)
	}
	out, info := keys(0, "create", "--workspace", "default")
	key := strings.TrimSpace(out)
	id := regexp.MustCompile(`ak_[0-9a-f]{16}`).FindString(info)
	if !strings.HasPrefix(key, "whk_") || strings.Contains(key, "\n") || id == "" {
		t.Fatalf("create printed %q / %q", out, info)
	}
	within("the new key to work", func() bool { return status(key) == http.StatusOK })
	within("the bootstrap key to be retired", func() bool { return status(bootstrap) == http.StatusUnauthorized })

	list, _ := keys(0, "list", "--workspace", "default")
	if !strings.Contains(list, id) || !strings.Contains(list, "active") || strings.Contains(list, key) {
		t.Fatalf("list:\n%s", list)
	}
	keys(1, "revoke", "--workspace", "acme", id) // the guard: nothing changes
	if s := status(key); s != http.StatusOK {
		t.Fatalf("a refused revoke changed the key: %d", s)
	}
	keys(0, "revoke", id, "--workspace", "default")
	within("the revoked key to stop working", func() bool { return status(key) == http.StatusUnauthorized })
	if s := status(bootstrap); s != http.StatusUnauthorized {
		t.Fatalf("revoking the shared key brought the bootstrap key back: %d", s)
	}

	out, _ = keys(0, "create", "--workspace", "acme", "--expires", "720h")
	acme := strings.TrimSpace(out)
	within("the acme key to work", func() bool { return status(acme) == http.StatusOK })
	if list, _ := keys(0, "list"); !strings.Contains(list, "revoked") || strings.Count(list, "ak_") != 2 {
		t.Fatalf("list of every workspace:\n%s", list)
	}
	keys(2, "create")
	keys(2, "revoke")
	keys(2, "frobnicate")
	keys(2, "list", "--expires", "1h")
	if strings.Contains(d.logs.String(), key) || strings.Contains(d.logs.String(), acme) {
		t.Fatal("the daemon logged a key")
	}
}
