package signature

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"
)

func FuzzVerify(f *testing.F) {
	f.Add("msg_1", int64(1614265330), []byte(`{"a":1}`), "")
	f.Add("", int64(0), []byte{}, "v1,")
	f.Add("m", int64(-1), []byte("x"), "v1,abc v1a,def  v2,")
	f.Add(specID, specTS, []byte(specBody), specSig)
	f.Add("id", int64(1<<62), []byte{0, 1, 2}, " , ,, v1,v1,v1")
	s := mustSecret(f, specSecret)
	f.Fuzz(func(t *testing.T, id string, ts int64, body []byte, header string) {
		now := time.Unix(ts, 0)
		sig := s.Sign(id, ts, body)
		err := Verify(s, id, ts, body, header, now, 0)
		if err == nil && !strings.Contains(" "+header+" ", " "+sig+" ") {
			t.Fatalf("Verify accepted header %q without the signature %q", header, sig)
		}
		for _, h := range []string{sig, header + " " + sig, sig + " " + header} {
			if err := Verify(s, id, ts, body, h, now, 0); err != nil {
				t.Fatalf("Verify(%q) = %v, want nil", h, err)
			}
		}
	})
}

func FuzzParseSecret(f *testing.F) {
	for _, in := range []string{
		specSecret, strings.TrimPrefix(specSecret, SecretPrefix), "", SecretPrefix, "whsec_=",
		"whsec_YQ", "whsec_YQ==", "whsec_whsec_YQ==", "whsec_!!!!", "YWJj\n", "whsec_ YQ==",
	} {
		f.Add(in)
	}
	f.Fuzz(func(t *testing.T, in string) {
		s, err := ParseSecret(in)
		if err != nil {
			if !s.IsZero() {
				t.Fatal("failed parse returned a usable Secret")
			}
			return
		}
		if s.IsZero() {
			t.Fatalf("ParseSecret(%q) succeeded with an empty key", in)
		}
		// The canonical spelling of the same key must sign identically.
		canon, err := ParseSecret(SecretPrefix + base64.StdEncoding.EncodeToString(s.key))
		if err != nil {
			t.Fatalf("canonical form of %q: %v", in, err)
		}
		if a, b := s.Sign("id", 1, []byte("b")), canon.Sign("id", 1, []byte("b")); a != b {
			t.Fatalf("ParseSecret(%q) signs %q, canonical form signs %q", in, a, b)
		}
	})
}
