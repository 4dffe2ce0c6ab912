package api

import (
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

func TestClientAddress(t *testing.T) {
	lb := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8:ffff::/48")}
	tests := []struct {
		name    string
		trusted []netip.Prefix
		header  string // Config.ForwardedHeader
		remote  string
		xff     []string
		fwd     []string
		want    string
	}{
		{"no proxy configured: header ignored", nil, "", "192.0.2.7:5555", []string{"198.51.100.1"}, nil, "192.0.2.7"},
		{"untrusted peer: header ignored", lb, "", "192.0.2.7:5555", []string{"198.51.100.1"}, nil, "192.0.2.7"},
		{"trusted peer, one hop", lb, "", "10.1.2.3:5555", []string{"198.51.100.1"}, nil, "198.51.100.1"},
		{"client-forged hops left of the proxy's are not reached", lb, "", "10.1.2.3:5555",
			[]string{"6.6.6.6, 198.51.100.1"}, nil, "198.51.100.1"},
		{"chain of trusted proxies", lb, "", "10.1.2.3:5555", []string{"198.51.100.1, 10.9.9.9", "10.8.8.8"}, nil, "198.51.100.1"},
		{"every hop trusted: the farthest", lb, "", "10.1.2.3:5555", []string{"10.9.9.9, 10.8.8.8"}, nil, "10.9.9.9"},
		{"trusted peer, no header", lb, "", "10.1.2.3:5555", nil, nil, "10.1.2.3"},
		{"garbage hop: stop at the last trusted", lb, "", "10.1.2.3:5555", []string{"198.51.100.1, nonsense"}, nil, "10.1.2.3"},
		{"empty hop: stop", lb, "", "10.1.2.3:5555", []string{"198.51.100.1,,"}, nil, "10.1.2.3"},
		{"hop with port", lb, "", "10.1.2.3:5555", []string{"198.51.100.1:4711"}, nil, "198.51.100.1"},
		{"IPv6 hop grouped by /64", lb, "", "10.1.2.3:5555", []string{"2001:db8:1:2:aaaa::1"}, nil, "2001:db8:1:2::"},
		{"bracketed IPv6 hop with port", lb, "", "[2001:db8:ffff::1]:443", []string{"[2001:db8:1:2::9]:80"}, nil, "2001:db8:1:2::"},
		{"IPv4-mapped peer is trusted", lb, "", "[::ffff:10.1.2.3]:80", []string{"198.51.100.1"}, nil, "198.51.100.1"},
		{"XFF configured: Forwarded ignored", lb, "", "10.1.2.3:5555", nil, []string{"for=198.51.100.1"}, "10.1.2.3"},
		{"Forwarded", lb, "Forwarded", "10.1.2.3:5555", nil, []string{`for=6.6.6.6, for=198.51.100.1;proto=https;by=10.1.2.3`}, "198.51.100.1"},
		{"Forwarded quoted IPv6 with port", lb, "forwarded", "10.1.2.3:5555", nil, []string{`For="[2001:db8:cafe::17]:4711"`}, "2001:db8:cafe::"},
		{"Forwarded: XFF ignored", lb, "Forwarded", "10.1.2.3:5555", []string{"198.51.100.1"}, nil, "10.1.2.3"},
		{"Forwarded unknown", lb, "Forwarded", "10.1.2.3:5555", nil, []string{"for=unknown"}, "10.1.2.3"},
		{"Forwarded element without for", lb, "Forwarded", "10.1.2.3:5555", nil, []string{"for=198.51.100.1, proto=http"}, "10.1.2.3"},
		{"Forwarded quoted comma", lb, "Forwarded", "10.1.2.3:5555", nil, []string{`for=198.51.100.1;x="a,b"`}, "198.51.100.1"},
		{"Forwarded two lines", lb, "Forwarded", "10.1.2.3:5555", nil, []string{"for=198.51.100.1", "for=10.7.7.7"}, "198.51.100.1"},
		{"unix socket peer", lb, "", "@", []string{"198.51.100.1"}, nil, "invalid IP"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := newClientResolver(tc.trusted, tc.header)
			if err != nil {
				t.Fatal(err)
			}
			r := httptest.NewRequest("GET", "/api/webhook", nil)
			r.RemoteAddr = tc.remote
			for _, v := range tc.xff {
				r.Header.Add(HeaderXForwardedFor, v)
			}
			for _, v := range tc.fwd {
				r.Header.Add(HeaderForwarded, v)
			}
			if got := c.client(r).String(); got != tc.want {
				t.Errorf("client = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestClientKey(t *testing.T) {
	tests := []struct{ remote, want string }{
		{"192.0.2.7:5555", "192.0.2.7"},
		{"[::ffff:192.0.2.7]:5555", "192.0.2.7"},
		{"[2001:db8:1:2:aaaa:bbbb:cccc:dddd]:443", "2001:db8:1:2::"},
		{"[2001:db8:1:2::1]:443", "2001:db8:1:2::"},
		{"[fe80::1%eth0]:80", "fe80::"},
		{"192.0.2.9", "192.0.2.9"},
		{"@", "invalid IP"},
		{"", "invalid IP"},
	}
	for _, tc := range tests {
		if got := clientKey(tc.remote).String(); got != tc.want {
			t.Errorf("clientKey(%q) = %s, want %s", tc.remote, got, tc.want)
		}
	}
}

func TestParseTrustedProxies(t *testing.T) {
	tests := []struct {
		spec string
		want string // prefixes joined by ","; "" with ok=false means an error
		ok   bool
	}{
		{"", "", true},
		{"10.0.0.0/8", "10.0.0.0/8", true},
		{" 10.1.2.3/8 , 192.0.2.7 ,2001:db8::/32", "10.0.0.0/8,192.0.2.7/32,2001:db8::/32", true},
		{"::ffff:10.0.0.1", "10.0.0.1/32", true},
		{"2001:db8::1", "2001:db8::1/128", true},
		{"10.0.0.0/33", "", false},
		{"example.com", "", false},
		{"10.0.0.1,", "", false},
		{"fe80::1%eth0", "", false},
	}
	for _, tc := range tests {
		got, err := ParseTrustedProxies(tc.spec)
		if (err == nil) != tc.ok {
			t.Errorf("%q: err = %v", tc.spec, err)
			continue
		}
		var parts []string
		for _, p := range got {
			parts = append(parts, p.String())
		}
		if s := strings.Join(parts, ","); tc.ok && s != tc.want {
			t.Errorf("%q = %s, want %s", tc.spec, s, tc.want)
		}
	}
	// A mapped CIDR from Config (not the parser) is unmapped too.
	c, err := newClientResolver([]netip.Prefix{netip.MustParsePrefix("::ffff:10.0.0.0/104")}, "")
	if err != nil || !c.isTrusted(netip.MustParseAddr("10.9.9.9")) {
		t.Errorf("mapped prefix: %v %v", c.trusted, err)
	}
}

// fuzzHops checks the invariant of both header parsers: whatever the
// header, the client is the peer or an address read from one of the hops,
// and never an address with a zone.
func fuzzHops(t *testing.T, hops []string, peer netip.Addr) {
	trustAll := func(netip.Addr) bool { return true }
	trustNone := func(netip.Addr) bool { return false }
	for _, trusted := range []func(netip.Addr) bool{trustAll, trustNone} {
		got := pickClient(hops, peer, trusted)
		if got == peer {
			continue
		}
		if got.Zone() != "" {
			t.Fatalf("client %s has a zone", got)
		}
		found := false
		for _, h := range hops {
			if a, ok := parseHop(h); ok && a == got {
				found = true
			}
		}
		if !found {
			t.Fatalf("client %s is neither the peer nor a hop of %q", got, hops)
		}
	}
}

func FuzzXForwardedFor(f *testing.F) {
	for _, s := range []string{"198.51.100.1", "6.6.6.6, 198.51.100.1", "[2001:db8::1]:80, 10.0.0.1:1",
		",,", "unknown", "::ffff:1.2.3.4", "fe80::1%eth0", `"1.2.3.4"`, "[::1", "1.2.3.4:99999"} {
		f.Add(s)
	}
	peer := netip.MustParseAddr("10.0.0.1")
	f.Fuzz(func(t *testing.T, header string) {
		fuzzHops(t, xForwardedFor([]string{header}), peer)
	})
}

func FuzzForwarded(f *testing.F) {
	for _, s := range []string{"for=198.51.100.1", `for="[2001:db8:cafe::17]:4711";proto=https, for=10.0.0.2`,
		`for=_hidden`, `for="\"1.2.3.4\""`, `x="a,b;c";for=1.2.3.4`, `for=`, `"`, `for="unterminated`, `;;,,`} {
		f.Add(s)
	}
	peer := netip.MustParseAddr("10.0.0.1")
	f.Fuzz(func(t *testing.T, header string) {
		hops := forwardedFor([]string{header})
		if len(hops) == 0 {
			t.Fatalf("no element at all from %q", header)
		}
		fuzzHops(t, hops, peer)
	})
}
