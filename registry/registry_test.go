package registry

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	bolt "go.etcd.io/bbolt"

	"github.com/webhookd/webhookd/events"
	"github.com/webhookd/webhookd/registry/ssrf"
)

var ssrfURLs = []string{
	"http://127.0.0.1/", "http://localhost/", "http://[::1]/", "http://0.0.0.0/", "http://10.0.0.1/",
	"http://172.16.0.1/", "http://192.168.0.1/", "http://100.64.0.1/", "http://169.254.169.254/latest/meta-data",
	"http://[fe80::1]/", "http://[fc00::1]/", "http://[::ffff:127.0.0.1]/", "http://2130706433/",
	"http://0x7f000001/", "http://0177.0.0.1/", "http://[64:ff9b::7f00:1]/", "https://LOCALHOST:8443/x",
}

func TestValidateSSRF(t *testing.T) {
	for _, u := range ssrfURLs {
		in := Input{URL: u, EventType: "workflowRun.completed"}
		var ve *ValidationError
		if err := (Validator{}).Validate(in); !errors.As(err, &ve) || ve.Fields["url"] == "" {
			t.Errorf("%s: guard on: err = %v, want a url field error", u, err)
		}
		if err := (Validator{Guard: &ssrf.Guard{AllowPrivate: true}}).Validate(in); err != nil {
			t.Errorf("%s: guard off: %v", u, err)
		}
	}
	// User info is refused whatever the guard says.
	for _, g := range []*ssrf.Guard{nil, {AllowPrivate: true}} {
		if err := (Validator{Guard: g}).Validate(Input{URL: "http://a@127.0.0.1/", EventType: "workflowRun.completed"}); err == nil {
			t.Error("http://a@127.0.0.1/ accepted")
		}
	}
}

func TestValidateFields(t *testing.T) {
	long := "https://example.com/" + strings.Repeat("a", MaxURLBytes)
	cases := []struct {
		name string
		in   Input
		bad  []string
	}{
		{"good", Input{URL: "https://example.com/hook?x=1", EventType: "workflowRun.completed"}, nil},
		{"good port and workflow", Input{URL: "http://example.com:8080/", EventType: "workflowCreditLimit.reached", WorkflowID: "WFCG-1 ünï"}, nil},
		{"empty", Input{}, []string{"url", "eventType"}},
		{"ftp", Input{URL: "ftp://example.com/", EventType: "workflowRun.started"}, []string{"url"}},
		{"relative", Input{URL: "/hook", EventType: "workflowRun.started"}, []string{"url"}},
		{"no host", Input{URL: "http:///x", EventType: "workflowRun.started"}, []string{"url"}},
		{"too long", Input{URL: long, EventType: "workflowRun.started"}, []string{"url"}},
		{"space", Input{URL: "http://exa mple.com/", EventType: "workflowRun.started"}, []string{"url"}},
		{"bad port", Input{URL: "http://example.com:99999/", EventType: "workflowRun.started"}, []string{"url"}},
		{"unknown type", Input{URL: "https://example.com/", EventType: "workflowRun.exploded"}, []string{"eventType"}},
		{"long workflow", Input{URL: "https://example.com/", EventType: "workflowRun.failed", WorkflowID: strings.Repeat("w", 257)}, []string{"workflowId"}},
		{"control workflow", Input{URL: "https://example.com/", EventType: "workflowRun.failed", WorkflowID: "a\nb"}, []string{"workflowId"}},
		{"utf8 workflow", Input{URL: "https://example.com/", EventType: "workflowRun.failed", WorkflowID: "\xff"}, []string{"workflowId"}},
		{"all bad", Input{URL: "gopher://x", EventType: "nope", WorkflowID: "\x00"}, []string{"url", "eventType", "workflowId"}},
	}
	for _, c := range cases {
		err := Validator{}.Validate(c.in)
		if len(c.bad) == 0 {
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
			continue
		}
		var ve *ValidationError
		if !errors.As(err, &ve) || len(ve.Fields) != len(c.bad) {
			t.Errorf("%s: err = %v, want fields %v", c.name, err, c.bad)
			continue
		}
		for _, f := range c.bad {
			if ve.Fields[f] == "" {
				t.Errorf("%s: field %s not named", c.name, f)
			}
		}
	}
}

func FuzzValidateURL(f *testing.F) {
	for _, u := range append(ssrfURLs, "https://example.com/hook", "http://a@b/", "http://[::1", "HTTP://EXAMPLE.COM") {
		f.Add(u)
	}
	v := Validator{}
	f.Fuzz(func(t *testing.T, u string) {
		if v.Validate(Input{URL: u, EventType: "workflowRun.completed"}) != nil {
			return
		}
		if msg := v.checkURL(u); msg != "" {
			t.Fatalf("accepted then refused: %s", msg)
		}
	})
}

func TestNewIDsAndSecrets(t *testing.T) {
	seen := map[string]bool{}
	prev := ""
	base := time.Now()
	for i := 0; i < 200; i++ {
		w, err := New("ws", Input{URL: "https://e.com", EventType: "workflowRun.started"}, base.Add(time.Duration(i)*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(w.ID, "wh_") || len(w.ID) != 29 || w.ID <= prev || seen[w.ID] {
			t.Fatalf("id %q after %q", w.ID, prev)
		}
		if !strings.HasPrefix(w.Secret, "whsec_") || len(w.Secret) != 6+44 || seen[w.Secret] {
			t.Fatalf("secret %q", w.Secret)
		}
		seen[w.ID], seen[w.Secret] = true, true
		prev = w.ID
	}
}

func openStore(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(Config{Path: path, OpenTimeout: 200 * time.Millisecond, MaxFailuresPerWebhook: 3})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustCreate(t *testing.T, s *Store, ws, et, wf string) Webhook {
	t.Helper()
	w, err := New(ws, Input{URL: "https://example.com/" + ws, EventType: et, WorkflowID: wf}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Create(context.Background(), w); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Millisecond) // distinct creation times keep list order obvious
	return w
}

func ids(ws []*Webhook) map[string]bool {
	m := map[string]bool{}
	for _, w := range ws {
		m[w.ID] = true
	}
	return m
}

func TestStoreRoundTripAndIndex(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "r.db")
	s := openStore(t, path)
	all := mustCreate(t, s, "acme", "workflowRun.completed", "")
	wf1 := mustCreate(t, s, "acme", "workflowRun.completed", "WF-1")
	other := mustCreate(t, s, "other", "workflowRun.completed", "")
	failed := mustCreate(t, s, "acme", "workflowRun.failed", "WF-1")

	got, err := s.Get(ctx, "acme", wf1.ID)
	if err != nil || got.URL != wf1.URL || got.Secret != wf1.Secret || !got.CreatedAt.Equal(wf1.CreatedAt) {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	if _, err := s.Get(ctx, "acme", other.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("other workspace's id: %v", err)
	}
	if err := s.Delete(ctx, "acme", other.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("delete of other workspace's id: %v", err)
	}
	check := func(s *Store) {
		t.Helper()
		m := ids(s.Index().Match("acme", events.WorkflowRunCompleted, "WF-1", nil))
		if len(m) != 2 || !m[all.ID] || !m[wf1.ID] {
			t.Errorf("match WF-1 = %v", m)
		}
		m = ids(s.Index().Match("acme", events.WorkflowRunCompleted, "WF-2", nil))
		if len(m) != 1 || !m[all.ID] {
			t.Errorf("match WF-2 = %v", m)
		}
		m = ids(s.Index().Match("acme", events.WorkflowRunFailed, "", nil))
		if len(m) != 0 {
			t.Errorf("failed without workflow matched %v", m)
		}
		if w, ok := s.Index().Get(failed.ID); !ok || w.URL != failed.URL {
			t.Errorf("index Get")
		}
		if s.Count() != 4 || s.Index().Len() != 4 {
			t.Errorf("count %d, index %d", s.Count(), s.Index().Len())
		}
	}
	check(s)
	s.Close()
	s = openStore(t, path) // the index is rebuilt identically
	check(s)
	if err := s.Delete(ctx, "acme", all.ID); err != nil {
		t.Fatal(err)
	}
	if m := ids(s.Index().Match("acme", events.WorkflowRunCompleted, "WF-1", nil)); len(m) != 1 || !m[wf1.ID] {
		t.Errorf("after delete: %v", m)
	}
	if _, ok := s.Index().Get(all.ID); ok || s.Count() != 3 {
		t.Error("deleted webhook still indexed")
	}
	s.Close()
}

func TestListPagination(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, filepath.Join(t.TempDir(), "r.db"))
	defer s.Close()
	var want []string
	for i := 0; i < 5; i++ {
		want = append(want, mustCreate(t, s, "acme", "workflowRun.started", "").ID)
		mustCreate(t, s, "other", "workflowRun.started", "")
	}
	var got []string
	cursor := ""
	for pages := 0; ; pages++ {
		page, next, err := s.List(ctx, "acme", cursor, 2)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range page {
			got = append(got, w.ID)
		}
		if next == "" {
			if pages != 2 {
				t.Errorf("%d pages, want 3", pages+1)
			}
			break
		}
		cursor = next
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("list = %v, want %v", got, want)
	}
	if _, _, err := s.List(ctx, "acme", "!!!", 2); !errors.Is(err, ErrBadCursor) {
		t.Errorf("bad cursor: %v", err)
	}
	if page, next, err := s.List(ctx, "nobody", "", 10); err != nil || len(page) != 0 || next != "" {
		t.Errorf("empty workspace: %v %v %v", page, next, err)
	}
}

func TestConcurrentReadersAndWriter(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "r.db"))
	defer s.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for r := 0; r < 4; r++ {
		wg.Go(func() {
			var buf []*Webhook
			for {
				select {
				case <-stop:
					return
				default:
				}
				buf = s.Index().Match("acme", events.WorkflowRunCompleted, "WF", buf[:0])
				for _, w := range buf {
					if w.Workspace != "acme" {
						t.Error("foreign match")
					}
				}
			}
		})
	}
	for i := 0; i < 100; i++ {
		w := mustCreate(t, s, "acme", "workflowRun.completed", "WF")
		if i%2 == 0 {
			if err := s.Delete(context.Background(), "acme", w.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	close(stop)
	wg.Wait()
	if n := len(s.Index().Match("acme", events.WorkflowRunCompleted, "WF", nil)); n != 50 {
		t.Errorf("%d matches, want 50", n)
	}
}

func TestLockedAndSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.db")
	s := openStore(t, path)
	start := time.Now()
	_, err := Open(Config{Path: path, OpenTimeout: 200 * time.Millisecond})
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), path) {
		t.Errorf("second open: %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Error("second open hung")
	}
	s.Close()

	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keySchema, []byte("99")) })
	db.Close()
	if _, err := Open(Config{Path: path}); err == nil || !strings.Contains(err.Error(), "schema") {
		t.Errorf("newer schema: %v", err)
	}
}

func TestFailures(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, filepath.Join(t.TempDir(), "r.db"))
	defer s.Close()
	w := mustCreate(t, s, "acme", "workflowRun.completed", "")
	base := time.Now()
	for i := 0; i < 5; i++ {
		f := Failure{ID: "msg_" + string(rune('a'+i)), WebhookID: w.ID, Workspace: "acme", EventID: "e",
			EventType: events.WorkflowRunCompleted, Attempts: 3, Reason: "max_attempts", LastAttemptAt: base.Add(time.Duration(i) * time.Second), Body: []byte(`{}`)}
		if err := s.RecordFailure(ctx, f); err != nil {
			t.Fatal(err)
		}
	}
	// The same delivery failing again replaces its record.
	if err := s.RecordFailure(ctx, Failure{ID: "msg_e", WebhookID: w.ID, Workspace: "acme", EventType: events.WorkflowRunCompleted, LastAttemptAt: base.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	fs, err := s.Failures(ctx, "acme", w.ID, 10)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range fs {
		got = append(got, f.ID)
	}
	if strings.Join(got, ",") != "msg_e,msg_d,msg_c" {
		t.Errorf("failures = %v, want newest 3", got)
	}
	if _, err := s.Failures(ctx, "other", w.ID, 10); !errors.Is(err, ErrNotFound) {
		t.Errorf("other workspace: %v", err)
	}
	if f, err := s.Failure(ctx, "acme", w.ID, "msg_d"); err != nil || f.Workspace != "acme" {
		t.Errorf("Failure = %+v %v", f, err)
	}
	if err := s.DeleteFailure(ctx, "acme", w.ID, "msg_d"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Failure(ctx, "acme", w.ID, "msg_d"); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleted failure: %v", err)
	}
	if err := s.Delete(ctx, "acme", w.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordFailure(ctx, Failure{ID: "late", WebhookID: w.ID, Workspace: "acme"}); err != nil {
		t.Errorf("failure for a deleted webhook: %v", err)
	}
}

func TestKeys(t *testing.T) {
	cases := []struct {
		spec string
		ok   bool
	}{
		{"", true},
		{"acme:0123456789abcdef,other:fedcba9876543210", true},
		{"acme0123456789abcdef", false},
		{"acme:short", false},
		{"ac me:0123456789abcdef", false},
		{"acme:0123456789abcdef,b:0123456789abcdef", false},
		{"acme:0123456789 abcdef", false},
	}
	for _, c := range cases {
		_, err := ParseAPIKeys(c.spec)
		if (err == nil) != c.ok {
			t.Errorf("%q: err = %v", c.spec, err)
		}
		if err != nil && strings.Contains(err.Error(), "0123456789") {
			t.Errorf("%q: error echoes the key: %v", c.spec, err)
		}
	}
	keys, _ := ParseAPIKeys("acme:0123456789abcdef")
	ring := NewKeyRing(keys, nil)
	if ws, ok := ring.Lookup("0123456789abcdef"); !ok || ws != "acme" {
		t.Error("configured key not found")
	}
	if _, ok := ring.Lookup("0123456789abcdeX"); ok {
		t.Error("wrong key accepted")
	}

	dir := t.TempDir()
	path := filepath.Join(dir, "r.db")
	s := openStore(t, path)
	keyFile := filepath.Join(dir, "bootstrap-api-key")
	created, err := s.Bootstrap(context.Background(), keyFile)
	if err != nil || !created {
		t.Fatalf("bootstrap: %v %v", created, err)
	}
	raw, _ := os.ReadFile(keyFile)
	fi, _ := os.Stat(keyFile)
	if fi.Mode().Perm() != 0o600 || !strings.HasSuffix(string(raw), "\n") {
		t.Errorf("key file mode %v content %q", fi.Mode(), raw)
	}
	if created, _ := s.Bootstrap(context.Background(), keyFile); created {
		t.Error("second bootstrap created another key")
	}
	s.Close()
	s = openStore(t, path)
	defer s.Close()
	stored, err := s.StoredKeys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if ws, ok := NewKeyRing(nil, stored).Lookup(strings.TrimSpace(string(raw))); !ok || ws != "default" {
		t.Error("bootstrap key not usable after reopen")
	}
	dbBytes, _ := os.ReadFile(path)
	if strings.Contains(string(dbBytes), strings.TrimSpace(string(raw))) {
		t.Error("the bootstrap key is stored in plaintext")
	}
}

func TestRegistrationsGauge(t *testing.T) {
	reg := prometheus.NewRegistry()
	s, err := Open(Config{Path: filepath.Join(t.TempDir(), "r.db"), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	mustCreate(t, s, "a", "workflowRun.started", "")
	mustCreate(t, s, "b", "workflowRun.started", "")
	if n := testutil.ToFloat64(gaugeOf(t, reg, "webhookd_registrations")); n != 2 {
		t.Errorf("webhookd_registrations = %v", n)
	}
}

func gaugeOf(t *testing.T, reg *prometheus.Registry, name string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "x"})
	for _, mf := range mfs {
		if mf.GetName() == name {
			g.Set(mf.GetMetric()[0].GetGauge().GetValue())
		}
	}
	return g
}
