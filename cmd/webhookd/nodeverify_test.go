package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/webhookd/webhookd/dispatcher/signature"
)

// nodeVerifyDir holds verify.js and its pinned npm dependency, the official
// Standard Webhooks library (.ci/run installs it with npm ci).
const nodeVerifyDir = "testdata/node-verify"

// needNodeVerifier returns node's path once verify.js can require
// standardwebhooks, running npm ci if node_modules is missing. Locally an
// unusable toolchain skips the test; in CI (CI=true) it fails, because
// .ci/run installs node and npm and runs npm ci first.
func needNodeVerifier(t *testing.T) string {
	t.Helper()
	unavailable := func(format string, args ...any) {
		t.Helper()
		if os.Getenv("CI") == "true" {
			t.Fatalf(format, args...)
		}
		t.Skipf(format, args...)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		unavailable("node not installed (apt-get install nodejs npm): cannot check the official Node library")
	}
	if _, err := os.Stat(filepath.Join(nodeVerifyDir, "node_modules", "standardwebhooks")); err == nil {
		return node
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		unavailable("%s/node_modules missing and npm not installed (apt-get install npm)", nodeVerifyDir)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund")
	cmd.Dir = nodeVerifyDir
	if out, err := cmd.CombinedOutput(); err != nil {
		unavailable("npm ci in %s: %v\n%s", nodeVerifyDir, err, out)
	}
	return node
}

// nodeCase is one entry of verify.js's input.
type nodeCase struct {
	Secret  string            `json:"secret"`
	Headers map[string]string `json:"headers"`
	Body    string            `json:"body"`
}

// nodeResult is one line of verify.js's output.
type nodeResult struct {
	OK    bool   `json:"ok"`
	Error string `json:"error"`
}

// runNodeVerify runs verify.js on cases and returns its exit code and one
// result per case.
func runNodeVerify(t *testing.T, node string, cases []nodeCase) (int, []nodeResult) {
	t.Helper()
	in, _ := json.Marshal(cases)
	path := filepath.Join(t.TempDir(), "cases.json")
	if err := os.WriteFile(path, in, 0o600); err != nil {
		t.Fatal(err)
	}
	script, _ := filepath.Abs(filepath.Join(nodeVerifyDir, "verify.js"))
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, node, script, path)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	code := 0
	if exit := (*exec.ExitError)(nil); errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	var results []nodeResult
	for sc := bufio.NewScanner(bytes.NewReader(out)); sc.Scan(); {
		var r nodeResult
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("verify.js line %q: %v (stderr: %s)", sc.Text(), err, stderr.String())
		}
		results = append(results, r)
	}
	// A crash (say, a missing module) also exits non-zero: only a line per
	// case shows that verify.js judged the signatures at all.
	if len(results) != len(cases) {
		t.Fatalf("verify.js exit %d, %d result lines for %d cases:\n%s\nstderr: %s", code, len(results), len(cases), out, stderr.String())
	}
	return code, results
}

// TestNodeLibraryVerifiesRotatedSecrets: during a rotation's grace period a
// real delivery verifies with the official Node library (npm
// standardwebhooks) under either the old or the new secret, and not under
// an unrelated one.
func TestNodeLibraryVerifiesRotatedSecrets(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: runs the binary and node")
	}
	node := needNodeVerifier(t)
	d := newDaemon(t)
	d.start()

	type capture struct {
		body   []byte
		header http.Header
	}
	got := make(chan capture, 1)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		select {
		case got <- capture{body, r.Header.Clone()}:
		default: // a retry: the first delivery is the one under test
		}
	}))
	defer recv.Close()

	id, oldSecret := d.register(recv.URL, "workflowRun.completed", "")
	status, out := d.api(http.MethodPost, "/api/webhook/"+id+"/rotate-secret", []byte(`{"grace":"1h"}`))
	var rotated struct{ Data struct{ Secret string } }
	if err := json.Unmarshal(out, &rotated); status != http.StatusOK || err != nil || rotated.Data.Secret == "" {
		t.Fatalf("rotate-secret: %d %s", status, out)
	}
	newSecret := rotated.Data.Secret

	publishEvents(t, d.natsURL(), 1)
	var c capture
	select {
	case c = <-got:
	case <-time.After(20 * time.Second):
		t.Fatal("no delivery within 20s")
	}
	// verify.js gets the body as a JSON string, which must round-trip.
	if !utf8.Valid(c.body) {
		t.Fatalf("body is not UTF-8: %q", c.body)
	}
	headers := map[string]string{}
	for _, h := range []string{"webhook-id", "webhook-timestamp", "webhook-signature"} {
		headers[h] = c.header.Get(h)
	}

	// Two signatures, new first, so the old-secret case below can only
	// pass on the second one.
	sigs := strings.Split(headers["webhook-signature"], " ")
	if len(sigs) != 2 || sigs[0] == sigs[1] {
		t.Fatalf("webhook-signature %q, want two distinct signatures", headers["webhook-signature"])
	}
	ts, err := strconv.ParseInt(headers["webhook-timestamp"], 10, 64)
	if err != nil {
		t.Fatalf("webhook-timestamp %q: %v", headers["webhook-timestamp"], err)
	}
	for i, secret := range []string{newSecret, oldSecret} {
		s, err := signature.ParseSecret(secret)
		if err != nil {
			t.Fatal(err)
		}
		if want := s.Sign(headers["webhook-id"], ts, c.body); sigs[i] != want {
			t.Fatalf("signature %d is %q, want %q", i, sigs[i], want)
		}
	}

	raw := make([]byte, 32)
	_, _ = rand.Read(raw)
	wrongSecret := signature.SecretPrefix + base64.StdEncoding.EncodeToString(raw)
	// Separate invocations: one verify.js exit code covers all its cases,
	// so a rejection must be run alone to be seen.
	for _, run := range []struct {
		name    string
		secrets []string
		wantOK  bool
	}{
		{"old and new secret", []string{oldSecret, newSecret}, true},
		{"wrong secret", []string{wrongSecret}, false},
	} {
		t.Run(run.name, func(t *testing.T) {
			var cases []nodeCase
			for _, s := range run.secrets {
				cases = append(cases, nodeCase{Secret: s, Headers: headers, Body: string(c.body)})
			}
			code, results := runNodeVerify(t, node, cases)
			for i, r := range results {
				if r.OK != run.wantOK {
					t.Errorf("case %d: ok=%v (error %q), want ok=%v", i, r.OK, r.Error, run.wantOK)
				}
				if !run.wantOK && !r.OK && !strings.Contains(r.Error, "No matching signature") {
					t.Errorf("case %d rejected for another reason: %q", i, r.Error)
				}
			}
			if wantCode := map[bool]int{true: 0, false: 1}[run.wantOK]; code != wantCode {
				t.Errorf("verify.js exit %d, want %d", code, wantCode)
			}
		})
	}
}
