package main

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// TestNoSecretsAtRestOrInLogs runs a full cycle with encryption on and
// debug logging, then greps the bbolt file and every log line for the API
// key, the encryption key and each webhook secret.
func TestNoSecretsAtRestOrInLogs(t *testing.T) {
	raw := make([]byte, 32)
	_, _ = rand.Read(raw)
	encKey := base64.StdEncoding.EncodeToString(raw)
	d := newDaemon(t, "--encryption-key", encKey)
	d.start()
	var got atomic.Int64
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if got.Add(1)%2 == 0 {
			w.WriteHeader(http.StatusInternalServerError) // exercise the retry and failure paths too
		}
	}))
	defer recv.Close()
	var secrets []string
	for i := 0; i < 3; i++ {
		_, secret := d.register(recv.URL+"/hook?token=url-secret-"+string(rune('a'+i)), "workflowRun.completed", "")
		secrets = append(secrets, secret)
	}
	// A wrong key too: failed auth must not log what was tried.
	req, _ := http.NewRequest(http.MethodGet, "http://"+d.httpAddr+"/api/webhook", nil)
	req.Header.Set("x-copy-ai-api-key", "attempted-key-0123456789")
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
	}
	publishEvents(t, d.natsURL(), 20)
	waitUntil(t, 30*time.Second, "deliveries", func() bool { return got.Load() >= 60 })
	if code, _ := d.term(20 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	logs := d.logs.String()
	needles := append([]string{d.apiKey, encKey, "attempted-key-0123456789", "whsec_"}, secrets...)
	// Every file of the data dir: the bbolt registry, and JetStream's store
	// with the shared-registry bucket, the events and the delivery jobs.
	files := 0
	err := filepath.WalkDir(d.dataDir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		for _, n := range needles {
			if bytes.Contains(raw, []byte(n)) {
				t.Errorf("%s contains %q", path, n)
			}
		}
		return nil
	})
	if err != nil || files < 3 {
		t.Fatalf("walking the data dir: %d files, %v", files, err)
	}
	// URLs are stored (they are the registration) but never logged: their
	// query strings may carry receivers' tokens.
	for _, n := range append(needles, "url-secret-") {
		if bytes.Contains([]byte(logs), []byte(n)) {
			t.Errorf("logs contain %q", n)
		}
	}
	if len(logs) < 200 {
		t.Errorf("suspiciously few logs (%d bytes): the grep proves nothing", len(logs))
	}
}
