package main

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
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
	db, err := os.ReadFile(filepath.Join(d.dataDir, "webhookd.db"))
	if err != nil {
		t.Fatal(err)
	}
	logs := d.logs.String()
	needles := append([]string{d.apiKey, encKey, "attempted-key-0123456789", "whsec_"}, secrets...)
	for _, n := range needles {
		if bytes.Contains(db, []byte(n)) {
			t.Errorf("bbolt file contains %q", n)
		}
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
