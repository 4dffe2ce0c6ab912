package failurelog

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/webhookd/webhookd/events"
	"github.com/webhookd/webhookd/events/natstest"
	"github.com/webhookd/webhookd/registry"
)

func connect(t *testing.T, url string, opts ...nats.Option) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// start runs a Log over js until the test ends and waits until it is set
// up; the cleanup checks that Run returns once its context ends.
func start(t *testing.T, js jetstream.JetStream, cfg Config) *Log {
	t.Helper()
	cfg.JetStream = js
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after its context ended")
		}
	})
	waitFor(t, "the failure stream to be set up", func() bool { return l.Ready() == nil })
	return l
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func mustRecord(t *testing.T, l *Log, webhookID, id string, attempts int) registry.Failure {
	t.Helper()
	f := sampleFailure(webhookID, id)
	f.Attempts = attempts
	if err := l.RecordFailure(t.Context(), f); err != nil {
		t.Fatalf("record %s/%s: %v", webhookID, id, err)
	}
	return f
}

func ids(fs []registry.Failure) string {
	s := make([]string, len(fs))
	for i, f := range fs {
		s[i] = f.ID
	}
	return strings.Join(s, ",")
}

func storedMsgs(t *testing.T, js jetstream.JetStream, stream, subject string) uint64 {
	t.Helper()
	st, err := js.Stream(t.Context(), stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(t.Context(), jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[subject]
}

func TestRecordListReplaceAndBound(t *testing.T) {
	js := connect(t, natstest.JetStream(t).ClientURL())
	l := start(t, js, Config{MaxPerWebhook: 3})
	ctx := t.Context()

	for i, id := range []string{"msg_a", "msg_b", "msg_c"} {
		mustRecord(t, l, "wh_1", id, i+1)
	}
	mustRecord(t, l, "wh_2", "msg_x", 1)
	// msg_a fails again after a manual retry: its record is replaced and
	// becomes the newest.
	mustRecord(t, l, "wh_1", "msg_a", 9)

	cases := []struct {
		name    string
		webhook string
		limit   int
		want    string
	}{
		{"newest first", "wh_1", 10, "msg_a,msg_c,msg_b"},
		{"limit", "wh_1", 2, "msg_a,msg_c"},
		{"zero limit is the default", "wh_1", 0, "msg_a,msg_c,msg_b"},
		{"other webhook", "wh_2", 10, "msg_x"},
		{"no records", "wh_3", 10, ""},
		{"wildcard id reads nothing", "*", 10, ""},
		{"multi-token id reads nothing", "wh_1.>", 10, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fs, err := l.Failures(ctx, c.webhook, c.limit)
			if err != nil {
				t.Fatal(err)
			}
			if got := ids(fs); got != c.want {
				t.Fatalf("failures = %q, want %q", got, c.want)
			}
			for _, f := range fs {
				if f.Body != nil || f.WebhookID != c.webhook || f.Workspace != "acme" {
					t.Fatalf("listed %+v", f)
				}
			}
		})
	}
	if n := storedMsgs(t, js, DefaultStream, "webhookd.failures.wh_1"); n != 3 {
		t.Errorf("wh_1 holds %d messages, want 3 (the replaced record removed)", n)
	}
	got, err := l.Failure(ctx, "wh_1", "msg_a")
	want := sampleFailure("wh_1", "msg_a")
	if err != nil || got.Attempts != 9 || string(got.Body) != string(want.Body) || got.EventID != want.EventID ||
		!got.LastAttemptAt.Equal(want.LastAttemptAt) || got.Workspace != "acme" || got.EventType != events.WorkflowRunCompleted {
		t.Fatalf("Failure = %+v, %v", got, err)
	}

	// Replacing a record at the bound pushes no other record out.
	mustRecord(t, l, "wh_1", "msg_c", 4)
	if fs, _ := l.Failures(ctx, "wh_1", 10); ids(fs) != "msg_c,msg_a,msg_b" {
		t.Fatalf("after replacing at the bound: %q", ids(fs))
	}
	// The bound: a fourth id pushes the oldest (msg_b) out.
	mustRecord(t, l, "wh_1", "msg_d", 1)
	if fs, _ := l.Failures(ctx, "wh_1", 10); ids(fs) != "msg_d,msg_c,msg_a" {
		t.Fatalf("after the bound: %q", ids(fs))
	}
	if _, err := l.Failure(ctx, "wh_1", "msg_b"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("discarded record: %v", err)
	}
	// Every read cleaned up its consumer.
	st, err := js.Stream(ctx, DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := st.Info(ctx); err != nil || info.State.Consumers != 0 {
		t.Fatalf("%d consumers left behind, %v", info.State.Consumers, err)
	}
}

func TestNotFoundDeleteAndForget(t *testing.T) {
	js := connect(t, natstest.JetStream(t).ClientURL())
	l := start(t, js, Config{})
	ctx := t.Context()
	mustRecord(t, l, "wh_1", "msg_a", 1)
	mustRecord(t, l, "wh_1", "msg_b", 1)
	mustRecord(t, l, "wh_2", "msg_c", 1)

	for _, c := range []struct{ webhook, id string }{
		{"wh_1", "msg_nope"}, {"wh_2", "msg_a"}, {"wh_3", "msg_a"}, {"*", "msg_a"}, {"", "msg_a"}, {"wh_1", ""},
	} {
		if _, err := l.Failure(ctx, c.webhook, c.id); !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("Failure(%q, %q) = %v, want ErrNotFound", c.webhook, c.id, err)
		}
		if err := l.DeleteFailure(ctx, c.webhook, c.id); !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("DeleteFailure(%q, %q) = %v, want ErrNotFound", c.webhook, c.id, err)
		}
	}

	if err := l.DeleteFailure(ctx, "wh_1", "msg_a"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Failure(ctx, "wh_1", "msg_a"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("deleted record: %v", err)
	}
	if err := l.DeleteFailure(ctx, "wh_1", "msg_a"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if fs, _ := l.Failures(ctx, "wh_1", 0); ids(fs) != "msg_b" {
		t.Fatalf("after delete: %q", ids(fs))
	}

	if err := l.Forget(ctx, "wh_1"); err != nil {
		t.Fatal(err)
	}
	if fs, _ := l.Failures(ctx, "wh_1", 0); len(fs) != 0 {
		t.Fatalf("forgotten webhook still lists %q", ids(fs))
	}
	if fs, _ := l.Failures(ctx, "wh_2", 0); ids(fs) != "msg_c" {
		t.Fatalf("Forget touched another webhook: %q", ids(fs))
	}
	if err := l.Forget(ctx, "*"); err != nil {
		t.Fatal(err)
	}
	if fs, _ := l.Failures(ctx, "wh_2", 0); ids(fs) != "msg_c" {
		t.Fatalf("Forget(\"*\") purged other webhooks: %q", ids(fs))
	}
}

func TestMalformedMessagesAreSkipped(t *testing.T) {
	js := connect(t, natstest.JetStream(t).ClientURL())
	reg := prometheus.NewRegistry()
	l := start(t, js, Config{Registerer: reg})
	ctx := t.Context()
	mustRecord(t, l, "wh_1", "msg_a", 1)
	other, err := encodeRecord("", sampleFailure("wh_2", "msg_z"), true)
	if err != nil {
		t.Fatal(err)
	}
	junk := []*nats.Msg{
		{Subject: "webhookd.failures.wh_1", Data: []byte("hand-written junk")},
		{Subject: "webhookd.failures.wh_1", Header: nats.Header{hdrRecord: {"{not json"}}},
		{Subject: "webhookd.failures.wh_1", Header: nats.Header{hdrRecord: {`{"v":7,"id":"msg_q","webhookId":"wh_1"}`}}},
		// A valid record of wh_2 on wh_1's subject must not show as wh_1's.
		{Subject: "webhookd.failures.wh_1", Header: other.Header, Data: other.Data},
	}
	for _, m := range junk {
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	mustRecord(t, l, "wh_1", "msg_b", 1)

	fs, err := l.Failures(ctx, "wh_1", 0)
	if err != nil || ids(fs) != "msg_b,msg_a" {
		t.Fatalf("failures = %q, %v", ids(fs), err)
	}
	if n := testutil.ToFloat64(l.malformed); n < float64(len(junk)) {
		t.Fatalf("malformed counter = %v, want at least %d", n, len(junk))
	}
	if _, err := l.Failure(ctx, "wh_1", "msg_z"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("misplaced record: %v", err)
	}
	if got, err := l.Failure(ctx, "wh_1", "msg_a"); err != nil || got.ID != "msg_a" {
		t.Fatalf("Failure beside junk = %+v, %v", got, err)
	}
	if n, err := testutil.GatherAndCount(reg, "webhookd_failurelog_malformed_total"); err != nil || n != 1 {
		t.Fatalf("metric registered %d times, %v", n, err)
	}
}

// TestTwoInstancesShareRecords: records written through one Log are read,
// retried and forgotten through another on the same NATS, as two
// webhookd instances behind a load balancer would.
func TestTwoInstancesShareRecords(t *testing.T) {
	ns := natstest.JetStream(t)
	reg := prometheus.NewRegistry()
	a := start(t, connect(t, ns.ClientURL()), Config{Registerer: reg})
	b := start(t, connect(t, ns.ClientURL()), Config{Registerer: reg})
	ctx := t.Context()

	mustRecord(t, a, "wh_1", "msg_a", 1)
	mustRecord(t, b, "wh_1", "msg_b", 1)
	mustRecord(t, a, "wh_1", "msg_c", 1)
	for name, l := range map[string]*Log{"a": a, "b": b} {
		fs, err := l.Failures(ctx, "wh_1", 0)
		if err != nil || ids(fs) != "msg_c,msg_b,msg_a" {
			t.Fatalf("%s lists %q, %v", name, ids(fs), err)
		}
	}
	// A failure recorded by a is retried through b: b reads it whole.
	f, err := b.Failure(ctx, "wh_1", "msg_a")
	if err != nil || string(f.Body) != string(sampleFailure("wh_1", "msg_a").Body) {
		t.Fatalf("b reads a's record: %+v, %v", f, err)
	}
	if err := b.DeleteFailure(ctx, "wh_1", "msg_a"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Failure(ctx, "wh_1", "msg_a"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("a still has the record b deleted: %v", err)
	}
	// Replacing through b a record a wrote.
	mustRecord(t, b, "wh_1", "msg_c", 5)
	if fs, _ := a.Failures(ctx, "wh_1", 0); ids(fs) != "msg_c,msg_b" || fs[0].Attempts != 5 {
		t.Fatalf("a after b's replace: %q", ids(fs))
	}
	if err := a.Forget(ctx, "wh_1"); err != nil {
		t.Fatal(err)
	}
	if fs, _ := b.Failures(ctx, "wh_1", 0); len(fs) != 0 {
		t.Fatalf("b still lists %q after a forgot the webhook", ids(fs))
	}
}

func TestBodyLimit(t *testing.T) {
	js := connect(t, natstest.JetStream(t).ClientURL())
	l := start(t, js, Config{MaxBodyBytes: 16})
	ctx := t.Context()
	big := mustRecord(t, l, "wh_1", "msg_big", 1) // its body is 54 bytes
	small := sampleFailure("wh_1", "msg_small")
	small.Body = []byte(`{"ok":true}`)
	if err := l.RecordFailure(ctx, small); err != nil {
		t.Fatal(err)
	}
	if f, err := l.Failure(ctx, "wh_1", "msg_big"); err != nil || f.Body != nil || f.EventID != big.EventID {
		t.Fatalf("over the bound: %+v, %v", f, err)
	}
	if f, err := l.Failure(ctx, "wh_1", "msg_small"); err != nil || string(f.Body) != `{"ok":true}` {
		t.Fatalf("under the bound: %+v, %v", f, err)
	}

	// With no bound of its own, a body the server could not take (over
	// max_payload, 1 MiB here) is left out rather than failing forever.
	whole := start(t, js, Config{Stream: "WHOLE", SubjectPrefix: "whole"})
	huge := sampleFailure("wh_1", "msg_huge")
	huge.Body = make([]byte, 2<<20)
	if err := whole.RecordFailure(ctx, huge); err != nil {
		t.Fatal(err)
	}
	if f, err := whole.Failure(ctx, "wh_1", "msg_huge"); err != nil || f.Body != nil {
		t.Fatalf("over max_payload: body %d bytes, %v", len(f.Body), err)
	}
}

func TestDefaultsAndValidation(t *testing.T) {
	js := connect(t, natstest.JetStream(t).ClientURL())
	l := start(t, js, Config{})
	st, err := js.Stream(t.Context(), DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	c := st.CachedInfo().Config
	if c.MaxMsgsPerSubject != 100 || c.MaxAge != 30*24*time.Hour || c.MaxBytes != 1<<30 || c.Discard != jetstream.DiscardOld ||
		c.Replicas != 1 || len(c.Subjects) != 1 || c.Subjects[0] != "webhookd.failures.*" || l.Filter() != c.Subjects[0] {
		t.Fatalf("stream config = %+v", c)
	}

	bad := []Config{
		{},
		{JetStream: js, Stream: "a.b"},
		{JetStream: js, SubjectPrefix: "webhookd.*"},
		{JetStream: js, SubjectPrefix: "a..b"},
		{JetStream: js, MaxPerWebhook: -1},
		{JetStream: js, MaxPerWebhook: MaxPerWebhookLimit + 1},
		{JetStream: js, MaxAge: -time.Second},
		{JetStream: js, MaxBytes: -1},
		{JetStream: js, MaxBodyBytes: -1},
		{JetStream: js, Replicas: 6},
	}
	for i, cfg := range bad {
		if _, err := New(cfg); err == nil {
			t.Errorf("case %d: New(%+v) accepted", i, cfg)
		}
	}
}

// TestStreamsDoNotOverlap sets up, on one server, every stream and bucket
// a webhookd deployment has with their default names and subjects (the
// deliveries stream as dispatcher/streams.go builds it), then the failure
// stream; and shows that a prefix that does overlap is reported as such.
func TestStreamsDoNotOverlap(t *testing.T) {
	js := connect(t, natstest.JetStream(t).ClientURL())
	ctx := t.Context()
	if _, err := events.EnsureStream(ctx, js, events.StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	root := "webhookd.deliveries"
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "WEBHOOKD_DELIVERIES", Subjects: []string{root + ".job.>", root + ".sched.>"},
		Retention: jetstream.WorkQueuePolicy, AllowMsgSchedules: true, AllowRollup: true,
	}); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"WEBHOOKD_REGISTRY", "WEBHOOKD_HEALTH"} {
		if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: b}); err != nil {
			t.Fatal(err)
		}
	}
	l := start(t, js, Config{})
	mustRecord(t, l, "wh_1", "msg_a", 1)
	// The record landed in the failure stream alone.
	for _, name := range []string{events.DefaultStreamName, "WEBHOOKD_DELIVERIES"} {
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if info, err := st.Info(ctx); err != nil || info.State.Msgs != 0 {
			t.Fatalf("%s holds %d messages, %v", name, info.State.Msgs, err)
		}
	}

	for _, prefix := range []string{events.DefaultPrefix, root} {
		clash, err := New(Config{JetStream: js, Stream: "CLASH", SubjectPrefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		// webhookd.deliveries.failures.* lies beside job.> and sched.>,
		// not under them; events.failures.* lies under events.>.
		err = clash.setup(ctx)
		if prefix == events.DefaultPrefix && !isOverlap(err) {
			t.Errorf("prefix %q: setup = %v, want a subject overlap", prefix, err)
		}
		if prefix == root && err != nil {
			t.Errorf("prefix %q: setup = %v", prefix, err)
		}
	}
}

// TestUnavailableUntilSetUp: before Run has set the stream up (here
// because NATS is not running yet) every method fails with
// registry.ErrUnavailable; Run keeps trying and succeeds once it is.
func TestUnavailableUntilSetUp(t *testing.T) {
	dir := t.TempDir()
	opts := &server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir, NoSigs: true, NoLog: true}
	probe, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go probe.Start()
	if !probe.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server did not start")
	}
	url := probe.ClientURL()
	port := probe.Addr().(*net.TCPAddr).Port
	probe.Shutdown()
	probe.WaitForShutdown()

	js := connect(t, url, nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	l, err := New(Config{JetStream: js})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	calls := map[string]func() error{
		"Ready":         l.Ready,
		"RecordFailure": func() error { return l.RecordFailure(ctx, sampleFailure("wh_1", "msg_a")) },
		"Failures":      func() error { _, err := l.Failures(ctx, "wh_1", 0); return err },
		"Failure":       func() error { _, err := l.Failure(ctx, "wh_1", "msg_a"); return err },
		"DeleteFailure": func() error { return l.DeleteFailure(ctx, "wh_1", "msg_a") },
		"Forget":        func() error { return l.Forget(ctx, "wh_1") },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, registry.ErrUnavailable) {
			t.Errorf("%s before setup = %v, want ErrUnavailable", name, err)
		}
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(runCtx) }()
	time.Sleep(300 * time.Millisecond) // Run is retrying against nothing

	opts2 := *opts
	opts2.Port = port
	ns, err := server.NewServer(&opts2)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server did not start")
	}
	waitFor(t, "Run to set the stream up once NATS is there", func() bool { return l.Ready() == nil })
	mustRecord(t, l, "wh_1", "msg_a", 1)

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}
