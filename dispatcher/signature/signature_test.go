package signature

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// The example published with the Standard Webhooks specification.
const (
	specSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	specID     = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	specTS     = int64(1614265330)
	specBody   = `{"test": 2432232314}`
	specSig    = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func mustSecret(t testing.TB, s string) Secret {
	t.Helper()
	sec, err := ParseSecret(s)
	if err != nil {
		t.Fatalf("ParseSecret(%q): %v", s, err)
	}
	return sec
}

func randomSecret(t testing.TB) string {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	return SecretPrefix + base64.StdEncoding.EncodeToString(key)
}

func TestSpecVector(t *testing.T) {
	s := mustSecret(t, specSecret)
	if got := s.Sign(specID, specTS, []byte(specBody)); got != specSig {
		t.Fatalf("Sign = %q, want %q", got, specSig)
	}
	if err := Verify(s, specID, specTS, []byte(specBody), specSig, time.Unix(specTS, 0), 0); err != nil {
		t.Fatalf("Verify(spec vector) = %v", err)
	}
}

// TestAgainstPlainHMAC recomputes the MAC the obvious way, so a bug in the
// pooled, buffer-reusing path (e.g. a stale prefix) cannot hide.
func TestAgainstPlainHMAC(t *testing.T) {
	raw := randomSecret(t)
	s := mustSecret(t, raw)
	key, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(raw, SecretPrefix))
	inputs := []struct {
		id   string
		ts   int64
		body string
	}{
		{"msg_a-much-longer-id-than-the-next-one-to-dirty-the-buffer", 1700000000, `{"a":1}`},
		{"m", 0, ""},
		{"msg_2", -5, "x"},
		{"msg_3", 9223372036854775807, strings.Repeat("é", 3000)},
	}
	for _, in := range inputs {
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte(in.id + "." + strconv.FormatInt(in.ts, 10) + "." + in.body))
		want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
		if got := string(s.AppendSignature([]byte("prefix:"), in.id, in.ts, []byte(in.body))); got != "prefix:"+want {
			t.Errorf("AppendSignature(%q,%d) = %q, want %q", in.id, in.ts, got, "prefix:"+want)
		}
	}
}

func TestInteropWithOfficialLibrary(t *testing.T) {
	bodies := []string{
		`{"type":"workflowRun.completed","workflowId":"WFCG-1","workflowRunId":"r-9"}`,
		"",
		"{\"emoji\":\"\U0001F680\",\"nul\":\"\\u0000\"}",
		strings.Repeat(`{"k":"v"},`, 5000),
	}
	for i, body := range bodies {
		secret := randomSecret(t)
		ours := mustSecret(t, secret)
		theirs, err := standardwebhooks.NewWebhook(secret)
		if err != nil {
			t.Fatal(err)
		}
		id := DeliveryID("evt-"+strconv.Itoa(i), "wh_1")
		now := time.Now()
		ts := now.Unix()

		t.Run("ours to theirs "+strconv.Itoa(i), func(t *testing.T) {
			h := http.Header{}
			h.Set(standardwebhooks.HeaderWebhookID, id)
			h.Set(standardwebhooks.HeaderWebhookTimestamp, strconv.FormatInt(ts, 10))
			h.Set(standardwebhooks.HeaderWebhookSignature, ours.Sign(id, ts, []byte(body)))
			if err := theirs.Verify([]byte(body), h); err != nil {
				t.Fatalf("official Verify of our signature: %v", err)
			}
			h.Set(standardwebhooks.HeaderWebhookSignature, ours.Sign(id, ts, []byte(body+" ")))
			if err := theirs.Verify([]byte(body), h); err == nil {
				t.Fatal("official Verify accepted a signature of another body")
			}
		})
		t.Run("theirs to ours "+strconv.Itoa(i), func(t *testing.T) {
			sig, err := theirs.Sign(id, time.Unix(ts, 0), []byte(body))
			if err != nil {
				t.Fatal(err)
			}
			if err := Verify(ours, id, ts, []byte(body), sig, now, 0); err != nil {
				t.Fatalf("Verify of the official signature: %v", err)
			}
			if got := ours.Sign(id, ts, []byte(body)); got != sig {
				t.Fatalf("signatures differ: ours %q, official %q", got, sig)
			}
		})
	}
}

func TestVerify(t *testing.T) {
	s := mustSecret(t, specSecret)
	other := mustSecret(t, randomSecret(t))
	now := time.Unix(specTS, 0)
	body := []byte(specBody)
	otherSig := other.Sign(specID, specTS, body)
	tests := []struct {
		name   string
		secret Secret
		id     string
		ts     int64
		body   []byte
		header string
		now    time.Time
		tol    time.Duration
		want   error
	}{
		{"valid", s, specID, specTS, body, specSig, now, 0, nil},
		{"second of two", s, specID, specTS, body, otherSig + " " + specSig, now, 0, nil},
		{"first of two", s, specID, specTS, body, specSig + " " + otherSig, now, 0, nil},
		{"extra spaces", s, specID, specTS, body, "  " + specSig + "  ", now, 0, nil},
		{"unknown versions ignored", s, specID, specTS, body, "v1a,abc v2,zzz " + specSig, now, 0, nil},
		{"only other secret", s, specID, specTS, body, otherSig, now, 0, ErrNoMatch},
		{"wrong body", s, specID, specTS, []byte(specBody + "\n"), specSig, now, 0, ErrNoMatch},
		{"wrong id", s, "msg_other", specTS, body, specSig, now, 0, ErrNoMatch},
		{"wrong version tag", s, specID, specTS, body, "v2" + specSig[2:], now, 0, ErrNoMatch},
		{"bare signature", s, specID, specTS, body, specSig[3:], now, 0, ErrNoMatch},
		{"truncated", s, specID, specTS, body, specSig[:len(specSig)-1], now, 0, ErrNoMatch},
		{"comma-joined", s, specID, specTS, body, otherSig + "," + specSig, now, 0, ErrNoMatch},
		{"empty header", s, specID, specTS, body, "", now, 0, ErrNoMatch},
		{"edge of default tolerance", s, specID, specTS, body, specSig, now.Add(5 * time.Minute), 0, nil},
		{"too old", s, specID, specTS, body, specSig, now.Add(5*time.Minute + time.Second), 0, ErrTimestamp},
		{"too new", s, specID, specTS, body, specSig, now.Add(-5*time.Minute - time.Second), 0, ErrTimestamp},
		{"custom tolerance", s, specID, specTS, body, specSig, now.Add(time.Hour), 2 * time.Hour, nil},
		{"custom tolerance exceeded", s, specID, specTS, body, specSig, now.Add(time.Hour), time.Minute, ErrTimestamp},
		{"zero secret", Secret{}, specID, specTS, body, specSig, now, 0, ErrInvalidSecret},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Verify(tc.secret, tc.id, tc.ts, tc.body, tc.header, tc.now, tc.tol)
			if tc.want == nil && err != nil {
				t.Fatalf("Verify = %v, want nil", err)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Verify = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestParseSecret(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	std := base64.StdEncoding.EncodeToString(key)
	tests := []struct {
		in    string
		valid bool
	}{
		{SecretPrefix + std, true},
		{std, true},
		{SecretPrefix + base64.RawStdEncoding.EncodeToString(key[:31]), true},
		{SecretPrefix + base64.StdEncoding.EncodeToString(key[:31]), true},
		{"", false},
		{SecretPrefix, false},
		{SecretPrefix + "not base64!", false},
		{SecretPrefix + base64.URLEncoding.EncodeToString([]byte{0xfb, 0xff}), false},
		{"whsec" + std, false},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			s, err := ParseSecret(tc.in)
			if !tc.valid {
				if !errors.Is(err, ErrInvalidSecret) {
					t.Fatalf("ParseSecret = %v, want ErrInvalidSecret", err)
				}
				if strings.Contains(err.Error(), strings.TrimPrefix(tc.in, SecretPrefix)) && tc.in != SecretPrefix && tc.in != "" {
					t.Fatalf("error %q echoes the secret", err)
				}
				return
			}
			if err != nil || s.IsZero() {
				t.Fatalf("ParseSecret = %v", err)
			}
		})
	}
	a, b := mustSecret(t, SecretPrefix+std), mustSecret(t, std)
	if a.Sign("i", 1, nil) != b.Sign("i", 1, nil) {
		t.Fatal("prefixed and bare forms of one key sign differently")
	}
}

func TestDeliveryID(t *testing.T) {
	re := regexp.MustCompile(`^msg_[0-9a-f]{32}$`)
	a := DeliveryID("evt-1", "wh_1")
	if !re.MatchString(a) {
		t.Fatalf("DeliveryID = %q, want msg_ + 32 hex", a)
	}
	if DeliveryID("evt-1", "wh_1") != a {
		t.Fatal("DeliveryID is not stable")
	}
	distinct := [][2]string{{"evt-1", "wh_2"}, {"evt-2", "wh_1"}, {"evt-1wh_1", ""}, {"evt-", "1wh_1"}, {"", "evt-1wh_1"}}
	for _, d := range distinct {
		if DeliveryID(d[0], d[1]) == a {
			t.Errorf("DeliveryID(%q,%q) collides with (evt-1,wh_1)", d[0], d[1])
		}
	}
	sum := sha256.Sum256([]byte("evt-1\x00wh_1"))
	if want := "msg_" + hex.EncodeToString(sum[:16]); a != want {
		t.Fatalf("DeliveryID = %q, want %q", a, want)
	}
}

func TestConcurrentSigning(t *testing.T) {
	s := mustSecret(t, specSecret)
	var wg sync.WaitGroup
	errs := make(chan string, 64)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				id := "msg_" + strconv.Itoa(g) + "_" + strings.Repeat("x", i%50)
				body := []byte(strconv.Itoa(i))
				sig := s.Sign(id, int64(i), body)
				if err := Verify(s, id, int64(i), body, sig, time.Unix(int64(i), 0), 0); err != nil {
					errs <- err.Error()
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

func TestAppendSignatureAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items on purpose under -race")
	}
	s := mustSecret(t, specSecret)
	body := make([]byte, 1024)
	dst := make([]byte, 0, 64)
	s.AppendSignature(dst, specID, specTS, body) // warm the pool
	allocs := testing.AllocsPerRun(1000, func() {
		dst = s.AppendSignature(dst[:0], specID, specTS, body)
	})
	if allocs > 0 {
		t.Fatalf("AppendSignature allocates %.1f times per call, want 0", allocs)
	}
}

func BenchmarkSign(b *testing.B) {
	s := mustSecret(b, specSecret)
	body := make([]byte, 1024)
	id := DeliveryID("evt-1", "wh_1")
	dst := make([]byte, 0, 64)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		dst = s.AppendSignature(dst[:0], id, 1700000000, body)
	}
}

func BenchmarkSignParallel(b *testing.B) {
	s := mustSecret(b, specSecret)
	body := make([]byte, 1024)
	id := DeliveryID("evt-1", "wh_1")
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		dst := make([]byte, 0, 64)
		for pb.Next() {
			dst = s.AppendSignature(dst[:0], id, 1700000000, body)
		}
	})
}

func BenchmarkSignString(b *testing.B) {
	s := mustSecret(b, specSecret)
	body := make([]byte, 1024)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		_ = s.Sign("msg_0123456789abcdef0123456789abcdef", 1700000000, body)
	}
}

func BenchmarkOfficialSign(b *testing.B) {
	wh, err := standardwebhooks.NewWebhook(specSecret)
	if err != nil {
		b.Fatal(err)
	}
	body := make([]byte, 1024)
	ts := time.Unix(1700000000, 0)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		_, _ = wh.Sign("msg_0123456789abcdef0123456789abcdef", ts, body)
	}
}
