package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestRotateSecret: what a rotation keeps, drops and refuses, on a local
// Store.
func TestRotateSecret(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name      string
		grace     time.Duration
		workspace string
		wantErr   error
		wantField string // a *ValidationError naming it
		wantPrev  bool
	}{
		{name: "default grace", grace: DefaultRotationGrace, workspace: "acme", wantPrev: true},
		{name: "no overlap", grace: 0, workspace: "acme"},
		{name: "longest grace", grace: MaxRotationGrace, workspace: "acme", wantPrev: true},
		{name: "grace too long", grace: MaxRotationGrace + time.Millisecond, workspace: "acme", wantField: FieldGrace},
		{name: "negative grace", grace: -time.Second, workspace: "acme", wantField: FieldGrace},
		{name: "other workspace", grace: time.Hour, workspace: "other", wantErr: ErrNotFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(Config{Path: filepath.Join(t.TempDir(), "r.db")})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			orig := mustCreate(t, s, "acme", "workflowRun.completed", "")
			got, err := s.RotateSecret(ctx, tc.workspace, orig.ID, tc.grace, now)
			var ve *ValidationError
			switch {
			case tc.wantErr != nil:
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			case tc.wantField != "":
				if !errors.As(err, &ve) || ve.Fields[tc.wantField] == "" {
					t.Fatalf("err = %v, want a validation error naming %s", err, tc.wantField)
				}
				return
			case err != nil:
				t.Fatal(err)
			}
			if got.Secret == orig.Secret || !validSecret(got.Secret) {
				t.Fatalf("secret = %q, want a fresh whsec_ secret", got.Secret)
			}
			if tc.wantPrev {
				if got.PreviousSecret != orig.Secret || !got.PreviousSecretUntil.Equal(now.Add(tc.grace)) {
					t.Fatalf("previous = %q until %v, want the old secret until %v", got.PreviousSecret, got.PreviousSecretUntil, now.Add(tc.grace))
				}
			} else if got.PreviousSecret != "" || !got.PreviousSecretUntil.IsZero() {
				t.Fatalf("grace 0 kept a previous secret: %q until %v", got.PreviousSecret, got.PreviousSecretUntil)
			}
			if ix, _ := s.Index().Get(orig.ID); ix.Secret != got.Secret || ix.PreviousSecret != got.PreviousSecret {
				t.Error("the index does not hold the rotated secrets")
			}
			if stored, _ := s.Get(ctx, "acme", orig.ID); stored.Secret != got.Secret || stored.PreviousSecret != got.PreviousSecret {
				t.Error("Get does not return the rotated secrets")
			}
		})
	}
}

// TestRotateTwiceKeepsTwoSecrets: a second rotation within the grace
// period drops the oldest secret; at most two sign.
func TestRotateTwiceKeepsTwoSecrets(t *testing.T) {
	ctx := context.Background()
	s, err := Open(Config{Path: filepath.Join(t.TempDir(), "r.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	w := mustCreate(t, s, "acme", "workflowRun.completed", "")
	now := time.Now()
	first, err := s.RotateSecret(ctx, "acme", w.ID, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	second, err := s.RotateSecret(ctx, "acme", w.ID, time.Hour, now.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if second.PreviousSecret != first.Secret || second.Secret == first.Secret || second.Secret == w.Secret {
		t.Fatalf("second rotation: previous %q (want %q)", second.PreviousSecret, first.Secret)
	}
	if !second.InGrace(now.Add(time.Hour)) || second.InGrace(now.Add(time.Hour+time.Minute)) {
		t.Error("InGrace does not end at PreviousSecretUntil")
	}
}

// TestPreviousSecretSealedAtRest: with a Sealer, the previous secret is
// sealed like the secret, opened on read and at reopen, and re-sealed
// under a new first key (at Open and by Reseal).
func TestPreviousSecretSealedAtRest(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "r.db")
	k1, k2 := randomKey(t), randomKey(t)
	s, err := Open(Config{Path: path, Sealer: sealer(t, k1)})
	if err != nil {
		t.Fatal(err)
	}
	w := mustCreate(t, s, "acme", "workflowRun.completed", "")
	rot, err := s.RotateSecret(ctx, "acme", w.ID, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	raw, _ := os.ReadFile(path)
	for _, sec := range []string{w.Secret, rot.Secret, "whsec_"} {
		if bytes.Contains(raw, []byte(sec)) {
			t.Fatalf("bbolt file holds %q in plaintext", sec)
		}
	}

	// Key rotation: Open re-seals both secrets; the old key can then go.
	s, err = Open(Config{Path: path, Sealer: sealer(t, k2, k1)})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(Config{Path: path, Sealer: sealer(t, k2)})
	if err != nil {
		t.Fatalf("after a key rotation the new key alone must open both secrets: %v", err)
	}
	defer s.Close()
	got, err := s.Get(ctx, "acme", w.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Secret != rot.Secret || got.PreviousSecret != w.Secret {
		t.Fatalf("secrets changed across a key rotation: %q / %q", got.Secret, got.PreviousSecret)
	}

	// Reseal: an entry whose previous secret is sealed under an older key
	// (or in plaintext) is stale and comes back with both sealed under k2.
	old, both := &Store{sealer: sealer(t, k1)}, &Store{sealer: sealer(t, k2, k1)}
	v, err := old.encode(got)
	if err != nil {
		t.Fatal(err)
	}
	plainPrev := got
	plainPrev.PreviousSecret = w.Secret
	pv, _ := json.Marshal(plainPrev) // previous secret in plaintext
	for name, value := range map[string][]byte{"older key": v, "plaintext previous": mixedSealing(t, s, got)} {
		out, changed, err := both.Reseal(value)
		if err != nil || !changed {
			t.Fatalf("%s: Reseal = %v, %v; want re-sealed", name, changed, err)
		}
		if !sealedValue(out) || bytes.Contains(out, []byte("whsec_")) {
			t.Fatalf("%s: re-sealed entry still holds a plaintext secret: %s", name, out)
		}
		back, stale, err := s.decode(out)
		if err != nil || stale || back.Secret != rot.Secret || back.PreviousSecret != w.Secret {
			t.Fatalf("%s: re-sealed entry decodes to %+v, %v", name, back, err)
		}
	}
	if sealedValue(pv) {
		t.Error("sealedValue reports a plaintext entry sealed")
	}
}

// mixedSealing encodes w with its secret sealed by s and its previous
// secret in plaintext, as a planted or half-migrated entry would be.
func mixedSealing(t *testing.T, s *Store, w Webhook) []byte {
	t.Helper()
	sealed, err := s.sealer.seal(w.Secret)
	if err != nil {
		t.Fatal(err)
	}
	w.Secret = sealed
	v, err := json.Marshal(w)
	if err != nil {
		t.Fatal(err)
	}
	if sealedValue(v) {
		t.Fatal("sealedValue reports a plaintext previous secret sealed")
	}
	return v
}

// TestPreviousSecretEntryRules: the journal entry rules for the previous
// secret.
func TestPreviousSecretEntryRules(t *testing.T) {
	base, err := New("acme", Input{URL: "https://example.com/h", EventType: "workflowRun.completed"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	other, err := newSecret()
	if err != nil {
		t.Fatal(err)
	}
	until := time.Now().Add(time.Hour).UTC().Truncate(time.Millisecond)
	cases := []struct {
		name string
		mut  func(*Webhook)
		ok   bool
	}{
		{"none", func(*Webhook) {}, true},
		{"valid previous secret", func(w *Webhook) { w.PreviousSecret, w.PreviousSecretUntil = other, until }, true},
		{"expired previous secret is kept", func(w *Webhook) {
			w.PreviousSecret, w.PreviousSecretUntil = other, until.Add(-48*time.Hour)
		}, true},
		{"previous secret too short", func(w *Webhook) { w.PreviousSecret, w.PreviousSecretUntil = "whsec_AAAA", until }, false},
		{"previous secret without prefix", func(w *Webhook) { w.PreviousSecret, w.PreviousSecretUntil = other[len("whsec_"):], until }, false},
		{"previous secret without an end", func(w *Webhook) { w.PreviousSecret = other }, false},
		{"an end without a previous secret", func(w *Webhook) { w.PreviousSecretUntil = until }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := base
			tc.mut(&w)
			if err := (Validator{}).validWebhook(&w); (err == nil) != tc.ok {
				t.Fatalf("validWebhook = %v, want ok=%v", err, tc.ok)
			}
			// Through a journal: a refused entry is not applied.
			s, err := Open(Config{Path: filepath.Join(t.TempDir(), "j.db")})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			v, _ := json.Marshal(w)
			refused, err := s.ApplyChanges([]Change{{ID: w.ID, Value: v, Revision: 1}})
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := s.Index().Get(w.ID); ok != tc.ok || (len(refused) == 0) != tc.ok {
				t.Fatalf("applied = %v, refused = %v; want applied %v", ok, refused, tc.ok)
			}
		})
	}
}
