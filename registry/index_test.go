package registry

import (
	"encoding/base64"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/webhookd/webhookd/events"
)

// TestRecordRoundTrip: every webhook comes back from its record exactly,
// or is reported inexact (and then pinned whole by the index).
func TestRecordRoundTrip(t *testing.T) {
	now := time.Now()
	fresh, err := New("acme", Input{URL: "https://example.com/h", EventType: string(events.WorkflowRunFailed), WorkflowID: "WFCG-1"}, now)
	if err != nil {
		t.Fatal(err)
	}
	rotated := fresh
	rotated.PreviousSecret, rotated.PreviousSecretUntil = fresh.Secret, fresh.CreatedAt.Add(time.Hour)
	rotated.Secret, _ = newSecret()
	disabled := fresh
	disabled.Disabled, disabled.DisabledReason, disabled.DisabledAt = true, DisabledGone, fresh.CreatedAt
	disabled.Description = "Zahlungen – ünïcødé ✓"
	odd := Webhook{ID: "wh_a", Workspace: "w", EventType: "custom.type", Secret: "whsec_not-base64!", URL: strings.Repeat("u", 3<<chunkBits)}
	badPadding := fresh
	badPadding.Secret = fresh.Secret[:len(fresh.Secret)-2] + "B=" // non-zero padding bits
	tests := []struct {
		name  string
		w     Webhook
		exact bool
	}{
		{"fresh", fresh, true},
		{"rotated", rotated, true},
		{"disabled with description", disabled, true},
		{"unpacked id, secret and a huge url", odd, true},
		{"non-canonical base64", badPadding, true},
		{"zero value", Webhook{}, true},
		{"monotonic clock reading", Webhook{ID: fresh.ID, CreatedAt: now}, false},
		{"non-UTC location", Webhook{ID: fresh.ID, CreatedAt: fresh.CreatedAt.In(time.FixedZone("x", 3600))}, false},
		{"zero instant with a location", Webhook{ID: fresh.ID, DisabledAt: time.Time{}.In(time.FixedZone("x", 60))}, false},
	}
	a := newArena(newIndex().seed)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			off, exact, _ := a.appendRecord(nil, &tc.w)
			if exact != tc.exact {
				t.Fatalf("exact = %v, want %v", exact, tc.exact)
			}
			got := a.decodeRecord(off, tc.name != "fresh")
			if exact && *got != tc.w {
				t.Fatalf("round trip:\n got %+v\nwant %+v", *got, tc.w)
			}
			flags, et, ws, wf := a.recordKey(off)
			if et != tc.w.EventType || ws != tc.w.Workspace || wf != tc.w.WorkflowID || (flags&fDisabled != 0) != tc.w.Disabled {
				t.Fatalf("key %q %q %q %b", et, ws, wf, flags)
			}
		})
	}
}

// TestPackID: ids newID makes pack into 16 bytes and back; others do not.
func TestPackID(t *testing.T) {
	for i := range 1000 {
		id, err := newID(time.UnixMilli(int64(i) * 7919 * 1e6))
		if err != nil {
			t.Fatal(err)
		}
		k, ok := packID(id)
		if !ok || unpackID(k) != id {
			t.Fatalf("%s: packed %v, back %s", id, ok, unpackID(k))
		}
	}
	for _, id := range []string{"", "wh_", "wh_a", "wh_8zzzzzzzzzzzzzzzzzzzzzzzzz", "wh_0000000000000000000000000u", "xx_00000000000000000000000000", "wh_0000000000000000000000000O"} {
		if _, ok := packID(id); ok {
			t.Fatalf("%q packed", id)
		}
	}
}

// TestIndexCompaction: churn past the compaction threshold keeps every
// live webhook findable and matched in order, and a webhook someone holds
// keeps its pointer across compactions.
func TestIndexCompaction(t *testing.T) {
	ix := newIndex()
	ix.compactMin = 16
	const n = 40
	ids := make([]string, n)
	for i := range ids {
		ids[i], _ = newID(time.UnixMilli(int64(i)))
		if i%5 == 0 {
			ids[i] = fmt.Sprintf("wh_raw%d", i) // an id that does not pack
		}
	}
	mk := func(i, version int) *Webhook {
		return &Webhook{ID: ids[i], Workspace: "acme", EventType: events.WorkflowRunCompleted, URL: fmt.Sprintf("https://x.example/%d", version),
			WorkflowID: fmt.Sprintf("WF-%d", i%3), CreatedAt: time.UnixMilli(int64(i)).UTC()}
	}
	for i := range n {
		ix.add(mk(i, 0))
	}
	held, _ := ix.Get(mk(7, 0).ID)
	gen := ix.gen.Load()
	for v := 1; v <= 10; v++ {
		for i := range n {
			if i != 7 {
				ix.put(mk(i, v))
			}
		}
	}
	if ix.gen.Load() == gen {
		t.Fatal("no compaction happened")
	}
	if g := ix.gen.Load(); int(g.slots) > 3*n {
		t.Fatalf("%d slots for %d webhooks", g.slots, n)
	}
	if got, _ := ix.Get(held.ID); got != held {
		t.Fatal("a held webhook got a new pointer across compaction")
	}
	for i := range n {
		want := mk(i, 10)
		if i == 7 {
			want = mk(7, 0)
		}
		if got, ok := ix.Get(want.ID); !ok || *got != *want {
			t.Fatalf("webhook %d: %+v", i, got)
		}
	}
	for wf := range 3 {
		var order []string
		for _, w := range ix.Match("acme", events.WorkflowRunCompleted, fmt.Sprintf("WF-%d", wf), nil) {
			order = append(order, w.ID)
		}
		var want []string
		for i := wf; i < n; i += 3 {
			want = append(want, mk(i, 0).ID)
		}
		if fmt.Sprint(order) != fmt.Sprint(want) {
			t.Fatalf("WF-%d order\n got %v\nwant %v", wf, order, want)
		}
	}
	for i := range n {
		ix.remove(mk(i, 0).ID)
	}
	if ix.Len() != 0 || len(ix.Match("acme", events.WorkflowRunCompleted, "WF-1", nil)) != 0 {
		t.Fatalf("after removing all: len %d", ix.Len())
	}
}

// TestMatchChecksKeys: webhooks whose match keys share a hash share a
// bucket run, and Match returns only those of the key asked for.
func TestMatchChecksKeys(t *testing.T) {
	ix := newIndex()
	a := &Webhook{ID: "wh_a", Workspace: "acme", EventType: events.WorkflowRunCompleted}
	b := &Webhook{ID: "wh_b", Workspace: "other", EventType: events.WorkflowRunCompleted}
	ix.add(a)
	ix.add(b)
	g := ix.gen.Load()
	slotB, _ := ix.slotOf(g, "wh_b")
	ix.link(g, ix.keyHash(keyOf(a)), slotB) // as if the two keys collided
	m := ix.Match("acme", events.WorkflowRunCompleted, "", nil)
	if len(m) != 1 || m[0].ID != "wh_a" {
		t.Fatalf("matched %v", m)
	}
}

// TestGetKeepsPointerWhileHeld: the webhook handed out stays the one Get
// returns while it is held; once dropped, an equal one replaces it.
func TestGetKeepsPointerWhileHeld(t *testing.T) {
	ix := newIndex()
	w, _ := New("acme", Input{URL: "https://example.com", EventType: string(events.WorkflowRunCompleted)}, time.Now())
	ix.add(&w)
	first, _ := ix.Get(w.ID)
	runtime.GC()
	if again, _ := ix.Get(w.ID); again != first {
		t.Fatal("a held webhook got a new pointer")
	}
	if m := ix.Match("acme", events.WorkflowRunCompleted, "", nil); len(m) != 1 || m[0] != first {
		t.Fatal("Match and Get hand out different webhooks")
	}
	runtime.KeepAlive(first)
	first = nil
	runtime.GC()
	if got, ok := ix.Get(w.ID); !ok || *got != w {
		t.Fatalf("after collection: %+v", got)
	}
}

// TestIndexConcurrentCompaction: readers see a consistent index while a
// writer churns through compactions (run with -race).
func TestIndexConcurrentCompaction(t *testing.T) {
	ix := newIndex()
	ix.compactMin = 8
	const n = 24
	ids := make([]string, n)
	for i := range n {
		id, _ := newID(time.UnixMilli(int64(i + 1)))
		ids[i] = id
		ix.add(&Webhook{ID: id, Workspace: "acme", EventType: events.WorkflowRunCompleted})
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			dst := make([]*Webhook, 0, n)
			for {
				select {
				case <-stop:
					return
				default:
				}
				dst = ix.Match("acme", events.WorkflowRunCompleted, "", dst[:0])
				if len(dst) != n {
					t.Errorf("matched %d of %d", len(dst), n)
					return
				}
				for _, id := range ids {
					if w, ok := ix.Get(id); !ok || w.ID != id {
						t.Errorf("Get(%s) = %v, %v", id, w, ok)
						return
					}
				}
			}
		})
	}
	for v := range 200 {
		ix.put(&Webhook{ID: ids[v%n], Workspace: "acme", EventType: events.WorkflowRunCompleted, URL: fmt.Sprint(v)})
	}
	close(stop)
	wg.Wait()
}

// TestHandedOutWebhooksOwnTheirStrings: a webhook Get hands out shares no
// bytes with the arena, so holding it keeps no chunk alive.
func TestHandedOutWebhooksOwnTheirStrings(t *testing.T) {
	ix := newIndex()
	w := Webhook{ID: "wh_raw", Workspace: "acme", URL: "https://example.com/h", EventType: "custom.type",
		WorkflowID: "WF-1", Secret: "plain", Description: "d", DisabledReason: "odd", Disabled: true, PreviousSecret: "p"}
	ix.add(&w)
	got, _ := ix.Get(w.ID)
	if *got != w {
		t.Fatalf("got %+v", *got)
	}
	for _, chunk := range *ix.gen.Load().arena.chunks.Load() {
		lo, hi := uintptr(unsafe.Pointer(unsafe.SliceData(chunk))), uintptr(unsafe.Pointer(unsafe.SliceData(chunk)))+uintptr(len(chunk))
		for _, s := range []string{got.ID, got.Workspace, got.URL, string(got.EventType), got.WorkflowID, got.Secret, got.Description, got.DisabledReason, got.PreviousSecret} {
			if p := uintptr(unsafe.Pointer(unsafe.StringData(s))); p >= lo && p < hi {
				t.Fatalf("%q shares the arena's bytes", s)
			}
		}
	}
}

// TestPackSecret: only a secret New could have made is packed; any other
// text, the 44 characters that decode to 33 bytes included, is kept as it
// is rather than overrunning the key.
func TestPackSecret(t *testing.T) {
	k := make([]byte, 32)
	for i := range k {
		k[i] = byte(i * 7)
	}
	made := secretPrefix + base64.StdEncoding.EncodeToString(k)
	for _, tc := range []struct {
		secret string
		packed bool
	}{
		{made, true},
		{secretPrefix + strings.Repeat("A", 44), false}, // 33 bytes, no padding
		{secretPrefix + strings.Repeat("A", 43) + "=", true},
		{secretPrefix + "short", false},
		{"whsec-" + made[6:], false},
	} {
		got, ok := packSecret(tc.secret)
		if ok != tc.packed {
			t.Errorf("packSecret(%q) packed = %v, want %v", tc.secret, ok, tc.packed)
		}
		if ok && secretPrefix+base64.StdEncoding.EncodeToString(got[:]) != tc.secret {
			t.Errorf("packSecret(%q) does not unpack to itself", tc.secret)
		}
	}
}
