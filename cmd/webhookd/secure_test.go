package main

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// TestEmbeddedNATSRequiresItsCredentials: given --nats-user/--nats-password,
// the embedded server demands them of every client, and the daemon (which
// uses them itself) works.
func TestEmbeddedNATSRequiresItsCredentials(t *testing.T) {
	d := newDaemon(t, "--nats-user", "webhookd")
	d.env = append(d.env, "WEBHOOKD_NATS_PASSWORD=embedded-secret-pass")
	d.start()
	if nc, err := nats.Connect(d.natsURL(), nats.Timeout(2*time.Second)); err == nil {
		nc.Close()
		t.Fatal("an unauthenticated client connected to the embedded NATS")
	} else if !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("unauthenticated connect: %v, want an authorization error", err)
	}
	nc, err := nats.Connect(d.natsURL(), nats.UserInfo("webhookd", "embedded-secret-pass"))
	if err != nil {
		t.Fatalf("connect with the credentials: %v", err)
	}
	nc.Close()
	if code := d.readyStatus(); code != 200 {
		t.Fatalf("/readyz = %d with an authenticated embedded NATS", code)
	}
}

// TestOpenDoorsRefusedByTheBinary: the real binary exits 2 with a message
// naming the flag for every listener that would open a door.
func TestOpenDoorsRefusedByTheBinary(t *testing.T) {
	for _, args := range [][]string{
		{"--nats-listen", "0.0.0.0:4222"},
		{"--admin-addr", "0.0.0.0:9001"},
		{"--pprof-addr", ":6060"},
	} {
		out, err := exec.Command(binPath, append([]string{"--data-dir", t.TempDir()}, args...)...).CombinedOutput()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), args[0]) {
			t.Errorf("%v: err %v, output %q; want exit 2 naming %s", args, err, out, args[0])
		}
	}
}
