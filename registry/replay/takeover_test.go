package replay

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/webhookd/webhookd/registry"
)

// slowJob publishes n matching events and returns a window around them.
func slowJob(e *env, n int) (since, until time.Time, want []string) {
	e.wh.put(registry.Webhook{ID: "wh_1", Workspace: ws, EventType: completed})
	since = time.Now().Add(-time.Second)
	for i := range n {
		id := fmt.Sprintf("e-%03d", i)
		e.publish(ws, completed, id, body(completed, ""))
		want = append(want, id)
	}
	return since, time.Now(), want
}

// covered reports whether got holds every id of want, in order of first
// appearance, allowing repeats (replay is at-least-once).
func covered(got, want []string) bool {
	var firsts []string
	seen := map[string]bool{}
	for _, id := range got {
		if !seen[id] {
			seen[id] = true
			firsts = append(firsts, id)
		}
	}
	return slices.Equal(firsts, want)
}

// stored reads a job's record straight from the bucket, cursor included.
func stored(t *testing.T, e *env, id string) Job {
	t.Helper()
	kv, err := e.js.KeyValue(t.Context(), DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	v, err := kv.Get(t.Context(), jobKey(ws, id))
	if err != nil {
		t.Fatal(err)
	}
	rec, err := decode(v.Value())
	if err != nil {
		t.Fatal(err)
	}
	return rec.Job
}

// TestProgressThroughAnotherInstance: a running job's progress and end
// read the same through a second Manager on the same bucket.
func TestProgressThroughAnotherInstance(t *testing.T) {
	e := newEnv(t)
	since, until, want := slowJob(e, 30)
	cfgA := e.config(e.connect(), "a")
	cfgA.Rate = 30
	a, _ := e.start(cfgA)
	b, _ := e.start(e.config(e.connect(), "b"))
	j, err := a.Start(t.Context(), Request{Workspace: ws, WebhookID: "wh_1", Since: since, Until: until})
	if err != nil {
		t.Fatal(err)
	}
	// Whichever instance claimed it, ask the other.
	running := waitJob(t, a, ws, j.ID, "the job to run", func(j Job) bool { return j.State == StateRunning })
	other := b
	if running.Owner == "b" {
		other = a
	}
	mid := waitJob(t, other, ws, j.ID, "progress through the other instance", func(j Job) bool {
		return j.State == StateRunning && j.Enqueued > 0 && j.Enqueued < int64(len(want))
	})
	if mid.Scanned < mid.Enqueued || mid.UpdatedAt.Before(mid.StartedAt) {
		t.Errorf("inconsistent progress %+v", mid)
	}
	end := waitJob(t, other, ws, j.ID, "the end through the other instance", finished)
	if end.State != StateSucceeded || end.Enqueued != int64(len(want)) || end.Owner != running.Owner {
		t.Errorf("end %+v, want succeeded by %s with %d enqueued", end, running.Owner, len(want))
	}
	if got := e.enq.ids(j.ID); !slices.Equal(got, want) {
		t.Errorf("replayed %v, want each of %v once", got, want)
	}
}

// TestTakeover: a job whose instance stops mid-way is finished by another
// without missing an event, both when the first stops cleanly (it hands
// the job back) and when it dies (its connection gone; the job goes stale
// and is taken over after StaleAfter).
func TestTakeover(t *testing.T) {
	for _, crash := range []bool{false, true} {
		name := map[bool]string{false: "clean stop", true: "crash"}[crash]
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			since, until, want := slowJob(e, 40)
			jsA, ncA := e.connectConn()
			cfgA := e.config(jsA, "a")
			cfgA.Rate = 40
			a, stopA := e.start(cfgA)
			j, err := a.Start(t.Context(), Request{Workspace: ws, WebhookID: "wh_1", Since: since, Until: until})
			if err != nil {
				t.Fatal(err)
			}
			// b starts after a has claimed the job, so a is its owner.
			waitJob(t, a, ws, j.ID, "a to make progress", func(j Job) bool { return j.Owner == "a" && j.Enqueued >= 5 })
			if crash {
				ncA.Close() // no hand-back can be written
			}
			stopA()
			stoppedAt := time.Now()
			doneByA := len(e.enq.ids(j.ID))
			left := stored(t, e, j.ID)
			if wantState, wantOwner := map[bool]string{false: StateQueued, true: StateRunning}[crash],
				map[bool]string{false: "", true: "a"}[crash]; left.State != wantState || left.Owner != wantOwner || left.Cursor == 0 {
				t.Errorf("a left the job %s owned by %q at seq %d, want %s owned by %q with its progress",
					left.State, left.Owner, left.Cursor, wantState, wantOwner)
			}

			b, _ := e.start(e.config(e.connect(), "b"))
			end := waitJob(t, b, ws, j.ID, "b to finish the job", finished)
			if end.State != StateSucceeded || end.Owner != "b" {
				t.Fatalf("end %+v, want succeeded by b", end)
			}
			if crash && time.Since(stoppedAt) < 900*time.Millisecond {
				t.Errorf("a dead instance's job was taken over after %s, before StaleAfter", time.Since(stoppedAt))
			}
			got := e.enq.ids(j.ID)
			if !covered(got, want) {
				t.Errorf("replayed %v, want all of %v in order", got, want)
			}
			// Repeats are at most what a did since its last progress write.
			if extra := len(got) - len(want); extra > doneByA {
				t.Errorf("%d repeats, more than the %d a did", extra, doneByA)
			}
			// Counters move with the cursor, so repeats are not counted.
			if n := int64(len(want)); end.Scanned != n || end.Matched != n || end.Enqueued != n {
				t.Errorf("scanned/matched/enqueued %d/%d/%d, want %d each", end.Scanned, end.Matched, end.Enqueued, n)
			}
		})
	}
}

// TestMaxPerWorkspace: a workspace has at most MaxPerWorkspace unfinished
// jobs, whichever instance is asked; another workspace is unaffected, and
// a finished or canceled job frees its place.
func TestMaxPerWorkspace(t *testing.T) {
	e := newEnv(t)
	since, until, _ := slowJob(e, 3)
	e.wh.put(registry.Webhook{ID: "wh_2", Workspace: "other", EventType: completed})
	e.enq.gate = make(chan struct{}) // re-deliveries wait: jobs stay unfinished
	cfg := e.config(e.connect(), "a")
	cfg.MaxPerWorkspace = 2
	a, _ := e.start(cfg)
	cfg = e.config(e.connect(), "b")
	cfg.MaxPerWorkspace = 2
	b, _ := e.start(cfg)
	req := Request{Workspace: ws, WebhookID: "wh_1", Since: since, Until: until}
	j1, err := a.Start(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Start(t.Context(), req); err != nil {
		t.Fatal(err)
	}
	for _, m := range []*Manager{a, b} {
		if _, err := m.Start(t.Context(), req); !errors.Is(err, ErrTooMany) {
			t.Errorf("third job: %v, want ErrTooMany", err)
		}
	}
	if _, err := a.Start(t.Context(), Request{Workspace: "other", WebhookID: "wh_2", Since: since, Until: until}); err != nil {
		t.Errorf("another workspace: %v", err)
	}
	c, err := b.Cancel(t.Context(), ws, j1.ID)
	if err != nil || c.State != StateCanceled {
		t.Fatalf("cancel: %+v %v", c, err)
	}
	j3, err := a.Start(t.Context(), req)
	if err != nil {
		t.Fatalf("after a cancel: %v", err)
	}
	close(e.enq.gate)
	waitJob(t, a, ws, j3.ID, "the job to end", finished)
	if got := waitJob(t, a, ws, j1.ID, "", finished); got.State != StateCanceled {
		t.Errorf("the canceled job ended %s", got.State)
	}
}

// TestConcurrency: an instance runs at most Concurrency jobs at once; the
// rest wait as queued, and run as slots free.
func TestConcurrency(t *testing.T) {
	e := newEnv(t)
	since, until, _ := slowJob(e, 2)
	e.enq.gate = make(chan struct{})
	cfg := e.config(e.js, "a")
	cfg.Concurrency = 1
	m, _ := e.start(cfg)
	req := Request{Workspace: ws, WebhookID: "wh_1", Since: since, Until: until}
	j1, err := m.Start(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	waitJob(t, m, ws, j1.ID, "the first job to run", func(j Job) bool { return j.State == StateRunning })
	j2, err := m.Start(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * cfg.StaleAfter / 2) // a scan or two
	if j, _ := m.Get(t.Context(), ws, j2.ID); j.State != StateQueued {
		t.Errorf("second job %s while the only slot is taken, want queued", j.State)
	}
	close(e.enq.gate)
	for _, id := range []string{j1.ID, j2.ID} {
		if j := waitJob(t, m, ws, id, "the jobs to end", finished); j.State != StateSucceeded || j.Enqueued != 2 {
			t.Errorf("job %s: %+v", id, j)
		}
	}
}
