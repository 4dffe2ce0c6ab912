package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// TestReplayRedeliversTheWindow: a replay through a second instance
// re-delivers exactly the events of its window, each with the webhook-id
// of its first delivery, and reports its progress; a replay of failed
// deliveries re-delivers only those.
func TestReplayRedeliversTheWindow(t *testing.T) {
	if testing.Short() {
		t.Skip("real daemons")
	}
	url := sharedNATS(t)
	flags := []string{"--retry-max-attempts", "1", "--circuit-failures", "100000"}
	a, b := onNATS(t, url, flags...), onNATS(t, url, flags...)
	a.start()
	b.start()

	var mu sync.Mutex
	ids := map[string][]string{} // run id -> webhook-ids received, in order
	failRuns := map[string]bool{"run-3": true, "run-4": true}
	failing := true
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev struct{ WorkflowRunID string }
		_ = json.NewDecoder(r.Body).Decode(&ev)
		mu.Lock()
		defer mu.Unlock()
		ids[ev.WorkflowRunID] = append(ids[ev.WorkflowRunID], r.Header.Get("webhook-id"))
		if failing && failRuns[ev.WorkflowRunID] {
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	defer recv.Close()
	hook, _ := a.register(recv.URL+"/hook", "workflowRun.completed", "")
	count := func(run string) int {
		mu.Lock()
		defer mu.Unlock()
		return len(ids[run])
	}

	publishEventsFrom(t, a.natsURL(), 0, 3) // before the window
	waitUntil(t, 15*time.Second, "the early events", func() bool { return count("run-2") == 1 })
	time.Sleep(1100 * time.Millisecond)
	since := time.Now().UTC()
	publishEventsFrom(t, a.natsURL(), 3, 4) // run-3..run-6: the window
	waitUntil(t, 15*time.Second, "the window's events", func() bool { return count("run-6") == 1 })
	waitUntil(t, 15*time.Second, "run-3 and run-4 failed", func() bool {
		f, _ := a.deliveries(t, hook, "?status=failed")
		return len(f) == 2
	})
	time.Sleep(1100 * time.Millisecond)
	until := time.Now().UTC()
	publishEventsFrom(t, a.natsURL(), 7, 2) // after the window
	waitUntil(t, 15*time.Second, "the late events", func() bool { return count("run-8") == 1 })
	mu.Lock()
	failing = false
	mu.Unlock()

	replayOf := func(inst *daemon, status string) map[string]any {
		body := fmt.Sprintf(`{"since":%q,"until":%q,"status":%q}`, since.Format(time.RFC3339), until.Format(time.RFC3339), status)
		code, out := inst.api(http.MethodPost, "/api/webhook/"+hook+"/replay", []byte(body))
		if code != http.StatusAccepted {
			t.Fatalf("replay: %d %s", code, out)
		}
		var env struct{ Data map[string]any }
		_ = json.Unmarshal(out, &env)
		id := env.Data["id"].(string)
		var job map[string]any
		waitUntil(t, 30*time.Second, "the replay to finish", func() bool {
			code, out := a.api(http.MethodGet, "/api/replays/"+id, nil) // the other instance
			var env struct{ Data map[string]any }
			_ = json.Unmarshal(out, &env)
			job = env.Data
			return code == 200 && job["state"] == "succeeded"
		})
		return job
	}

	job := replayOf(b, "failed")
	if job["enqueued"] != 2.0 {
		t.Errorf("failed-only replay enqueued %v, want 2: %v", job["enqueued"], job)
	}
	waitUntil(t, 15*time.Second, "run-3 and run-4 again", func() bool { return count("run-3") == 2 && count("run-4") == 2 })

	job = replayOf(b, "all")
	if job["enqueued"] != 4.0 || job["matched"] != 4.0 {
		t.Errorf("replay of all enqueued %v of %v matched, want 4 of 4: %v", job["enqueued"], job["matched"], job)
	}
	waitUntil(t, 15*time.Second, "the window again", func() bool { return count("run-5") == 2 && count("run-6") == 2 })
	time.Sleep(time.Second)
	mu.Lock()
	defer mu.Unlock()
	want := map[string]int{"run-0": 1, "run-1": 1, "run-2": 1, "run-3": 3, "run-4": 3, "run-5": 2, "run-6": 2, "run-7": 1, "run-8": 1}
	for run, n := range want {
		got := ids[run]
		if len(got) != n {
			t.Errorf("%s delivered %d times, want %d", run, len(got), n)
			continue
		}
		for _, id := range got {
			if id != got[0] {
				t.Errorf("%s: webhook-ids %v, want one stable id", run, got)
				break
			}
		}
	}
	if code, _ := a.api(http.MethodGet, "/api/replays/rp_nope", nil); code != 404 {
		t.Errorf("unknown replay: %d, want 404", code)
	}
	if code, out := a.api(http.MethodPost, "/api/webhook/"+hook+"/replay", []byte(`{"until":"soon"}`)); code != 422 {
		t.Errorf("bad replay body: %d %s, want 422", code, out)
	}
}
