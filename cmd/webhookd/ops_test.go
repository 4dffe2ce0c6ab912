package main

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestBackupCheckRestore: hot backup from a running daemon, offline check
// and backup of a stopped one, and a restore into a fresh data dir.
func TestBackupCheckRestore(t *testing.T) {
	adminAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	d := newDaemon(t, "--admin-addr", adminAddr)
	d.start()
	for i := 0; i < 3; i++ {
		d.register(fmt.Sprintf("https://example.com/hook/%d", i), "workflowRun.completed", "")
	}
	dir := t.TempDir()
	hot := filepath.Join(dir, "hot.db")
	out, err := exec.Command(binPath, "backup", "--out", hot, "--admin-url", "http://"+adminAddr).CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("3 webhooks")) {
		t.Fatalf("hot backup: %v %s", err, out)
	}
	fi, err := os.Stat(hot)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v %v", fi, err)
	}
	// Offline commands refuse a registry in use, and say so.
	out, err = exec.Command(binPath, "check", "--data-dir", d.dataDir).CombinedOutput()
	if err == nil || !bytes.Contains(out, []byte("in use")) {
		t.Errorf("check on a running daemon's data dir: %v %s", err, out)
	}
	if code, _ := d.term(20 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	out, err = exec.Command(binPath, "check", "--data-dir", d.dataDir).CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("3 webhooks")) {
		t.Errorf("offline check: %v %s", err, out)
	}
	off := filepath.Join(dir, "offline.db")
	if out, err := exec.Command(binPath, "backup", "--out", off, "--data-dir", d.dataDir).CombinedOutput(); err != nil {
		t.Fatalf("offline backup: %v %s", err, out)
	}
	out, _ = exec.Command(binPath, "check", "--delivery-timeout", "soon").CombinedOutput()
	if !bytes.Contains(out, []byte("delivery-timeout")) {
		t.Errorf("check does not validate flags: %s", out)
	}

	// Restore: the backup file becomes a new data dir's registry.
	r := newDaemon(t)
	r.apiKey = d.apiKey
	raw, _ := os.ReadFile(hot)
	if err := os.WriteFile(filepath.Join(r.dataDir, "webhookd.db"), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	r.start()
	status, body := r.api(http.MethodGet, "/api/webhook", nil)
	if status != 200 || bytes.Count(body, []byte(`"id":"wh_`)) != 3 {
		t.Fatalf("after restore: %d %s", status, body)
	}
}
