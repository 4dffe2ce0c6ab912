package ssrf

import (
	"errors"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"testing"
)

func TestCheckHost(t *testing.T) {
	tests := []struct {
		host string
		want string // "" = allowed, else exact error text
	}{
		// ordinary names never touch DNS and pass
		{"example.com", ""},
		{"hooks.example.com.", ""},
		{"receiver.internal.corp", ""}, // checked at dial time instead
		{"localhost.example.com", ""},
		{"mylocalhost", ""},
		{"127.0.0.1.nip.io", ""},
		{"1.2.3.4.5", ""},
		{"256.1.1.1", ""},
		{"4294967296", ""},
		{"0x1ffffffff", ""},
		{"08.0.0.1", ""}, // not octal, and decimal 8.0.0.1 is public
		{"0xg1", ""},
		// public literals
		{"8.8.8.8", ""},
		{"[2606:4700:4700::1111]", ""},
		{"2606:4700:4700::1111", ""},
		{"134744072", ""}, // 8.8.8.8
		{"0x08080808", ""},
		// localhost names
		{"localhost", "local host name localhost is not allowed"},
		{"LOCALHOST", "local host name LOCALHOST is not allowed"},
		{"localhost.", "local host name localhost. is not allowed"},
		{"api.localhost", "local host name api.localhost is not allowed"},
		{"a.b.LocalHost.", "local host name a.b.LocalHost. is not allowed"},
		{"localhost.localdomain", "local host name localhost.localdomain is not allowed"},
		{"ip6-localhost", "local host name ip6-localhost is not allowed"},
		// IPv4 literals, canonical and otherwise
		{"127.0.0.1", "loopback address 127.0.0.1 is not allowed"},
		{"127.0.0.1.", "loopback address 127.0.0.1 (in 127.0.0.1.) is not allowed"},
		{"2130706433", "loopback address 127.0.0.1 (in 2130706433) is not allowed"},
		{"0x7f000001", "loopback address 127.0.0.1 (in 0x7f000001) is not allowed"},
		{"0X7F000001", "loopback address 127.0.0.1 (in 0X7F000001) is not allowed"},
		{"0177.0.0.1", "loopback address 127.0.0.1 (in 0177.0.0.1) is not allowed"},
		{"0177.0000.0000.0001", "loopback address 127.0.0.1 (in 0177.0000.0000.0001) is not allowed"},
		{"017700000001", "loopback address 127.0.0.1 (in 017700000001) is not allowed"},
		{"127.1", "loopback address 127.0.0.1 (in 127.1) is not allowed"},
		{"127.0.1", "loopback address 127.0.0.1 (in 127.0.1) is not allowed"},
		{"0x7f.1", "loopback address 127.0.0.1 (in 0x7f.1) is not allowed"},
		{"0x7f.0.0x0.01", "loopback address 127.0.0.1 (in 0x7f.0.0x0.01) is not allowed"},
		{"127.0x0.0.1", "loopback address 127.0.0.1 (in 127.0x0.0.1) is not allowed"},
		{"0", "unspecified address 0.0.0.0 (in 0) is not allowed"},
		{"0.0.0.0", "unspecified address 0.0.0.0 is not allowed"},
		{"0x", "unspecified address 0.0.0.0 (in 0x) is not allowed"},
		{"169.254.169.254", "link-local address 169.254.169.254 is not allowed"},
		{"2852039166", "link-local address 169.254.169.254 (in 2852039166) is not allowed"},
		{"0xa9fea9fe", "link-local address 169.254.169.254 (in 0xa9fea9fe) is not allowed"},
		{"0251.0376.0251.0376", "link-local address 169.254.169.254 (in 0251.0376.0251.0376) is not allowed"},
		{"169.254.43518", "link-local address 169.254.169.254 (in 169.254.43518) is not allowed"},
		{"10.1", "private address 10.0.0.1 (in 10.1) is not allowed"},
		{"192.168.257", "private address 192.168.1.1 (in 192.168.257) is not allowed"},
		{"010.0.0.1", "private address 10.0.0.1 (in 010.0.0.1) is not allowed"}, // octal 8.0.0.1, decimal 10.0.0.1
		{"100.64.0.1", "carrier-grade NAT address 100.64.0.1 is not allowed"},
		{"224.0.0.251", "multicast address 224.0.0.251 is not allowed"},
		{"255.255.255.255", "broadcast address 255.255.255.255 is not allowed"},
		{"0xffffffff", "broadcast address 255.255.255.255 (in 0xffffffff) is not allowed"},
		{"240.0.0.1", "reserved address 240.0.0.1 is not allowed"},
		{"0.1.2.3", "\"this network\" address 0.1.2.3 is not allowed"},
		{"192.0.2.10", "documentation address 192.0.2.10 is not allowed"},
		{"198.18.0.1", "benchmarking address 198.18.0.1 is not allowed"},
		{"127.0.0.1 evil.com", "loopback address 127.0.0.1 (in 127.0.0.1 evil.com) is not allowed"},
		// IPv6 literals, bracketed or not, with zones
		{"[::1]", "loopback address ::1 is not allowed"},
		{"::1", "loopback address ::1 is not allowed"},
		{"[::]", "unspecified address :: is not allowed"},
		{"[0:0:0:0:0:0:0:1]", "loopback address ::1 is not allowed"},
		{"[fe80::1%eth0]", "link-local address fe80::1%eth0 is not allowed"},
		{"fe80::1%25eth0", "link-local address fe80::1%25eth0 is not allowed"},
		{"[fd00::1]", "unique local address fd00::1 is not allowed"},
		{"[ff02::1]", "multicast address ff02::1 is not allowed"},
		{"[::ffff:127.0.0.1]", "loopback address 127.0.0.1 (in ::ffff:127.0.0.1) is not allowed"},
		{"[::ffff:7f00:1]", "loopback address 127.0.0.1 (in ::ffff:127.0.0.1) is not allowed"},
		{"[::ffff:169.254.169.254]", "link-local address 169.254.169.254 (in ::ffff:169.254.169.254) is not allowed"},
		{"[64:ff9b::127.0.0.1]", "loopback address 127.0.0.1 (in 64:ff9b::7f00:1) is not allowed"},
		{"[64:ff9b::a9fe:a9fe]", "link-local address 169.254.169.254 (in 64:ff9b::a9fe:a9fe) is not allowed"},
		{"[64:ff9b:1::10.0.0.1]", "local-use NAT64 address 64:ff9b:1::a00:1 is not allowed"},
		{"[2002:7f00:1::]", "loopback address 127.0.0.1 (in 2002:7f00:1::) is not allowed"},
		{"[2001::1]", "Teredo address 2001::1 is not allowed"},
		{"[2001:db8::1]", "documentation address 2001:db8::1 is not allowed"},
		{"[::127.0.0.1]", "IPv4-compatible address ::7f00:1 is not allowed"},
		// degenerate input
		{"", "empty host \"\" is not allowed"},
		{"[]", "empty host \"\" is not allowed"},
	}
	var g Guard
	for _, tc := range tests {
		t.Run(tc.host, func(t *testing.T) {
			err := g.CheckHost(tc.host)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("CheckHost(%q) = %v, want nil", tc.host, err)
				}
				return
			}
			if !errors.Is(err, ErrBlocked) {
				t.Fatalf("CheckHost(%q) = %v, want ErrBlocked", tc.host, err)
			}
			if err.Error() != tc.want {
				t.Fatalf("CheckHost(%q) = %q, want %q", tc.host, err.Error(), tc.want)
			}
		})
	}
}

func TestCheckHostGuardSettings(t *testing.T) {
	off := &Guard{AllowPrivate: true}
	for _, h := range []string{"localhost", "127.0.0.1", "0x7f000001", "[::1]", "169.254.169.254"} {
		if err := off.CheckHost(h); err != nil {
			t.Errorf("AllowPrivate CheckHost(%q) = %v, want nil", h, err)
		}
	}
	var nilGuard *Guard
	if err := nilGuard.CheckHost("0177.1"); !errors.Is(err, ErrBlocked) {
		t.Errorf("nil guard CheckHost(0177.1) = %v, want ErrBlocked", err)
	}
	allow := &Guard{AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}
	if err := allow.CheckHost("0xa000001"); err != nil {
		t.Errorf("allow-listed CheckHost(0xa000001) = %v", err)
	}
	// Allow-listing 10/8 must not let the other reading of "010.0.0.1"
	// (octal 8.0.0.1, public) change anything, nor open loopback.
	if err := allow.CheckHost("010.0.0.1"); err != nil {
		t.Errorf("allow-listed CheckHost(010.0.0.1) = %v", err)
	}
	if err := allow.CheckHost("127.1"); !errors.Is(err, ErrBlocked) {
		t.Errorf("CheckHost(127.1) with 10/8 allowed = %v, want ErrBlocked", err)
	}
}

// TestCheckHostFromURL feeds hosts the way the registry does, through
// net/url, so that URL-level spellings are covered end to end.
func TestCheckHostFromURL(t *testing.T) {
	tests := []struct {
		raw     string
		blocked bool
	}{
		{"https://example.com/hook", false},
		{"https://example.com:8443/hook", false},
		{"http://127.0.0.1:8080/", true},
		{"http://127.0.0.1./", true},
		{"http://2130706433/", true},
		{"http://0x7f.1/", true},
		{"http://[::1]:80/", true},
		{"http://[::ffff:127.0.0.1]/", true},
		{"http://[fe80::1%25eth0]:80/", true},
		{"http://[64:ff9b::7f00:1]/", true},
		{"http://LOCALHOST:9/", true},
		{"http://foo.localhost./", true},
		{"http://user:pw@169.254.169.254/latest/meta-data/", true},
	}
	var g Guard
	for _, tc := range tests {
		u, err := url.Parse(tc.raw)
		if err != nil {
			t.Fatalf("url.Parse(%q): %v", tc.raw, err)
		}
		err = g.CheckHost(u.Hostname())
		if errors.Is(err, ErrBlocked) != tc.blocked {
			t.Errorf("%s: CheckHost(%q) = %v, want blocked=%v", tc.raw, u.Hostname(), err, tc.blocked)
		}
		if err != nil && (strings.Contains(err.Error(), "/") || strings.Contains(err.Error(), "pw")) {
			t.Errorf("%s: error %q leaks URL parts", tc.raw, err)
		}
	}
}

// refInetAton is an independent, deliberately naive reading of the inet_aton
// grammar built on strconv, used as the fuzzing oracle for parseIPv4.
func refInetAton(s string) (netip.Addr, bool) {
	parts := strings.Split(s, ".")
	if len(parts) > 4 {
		return netip.Addr{}, false
	}
	vals := make([]uint64, len(parts))
	for i, p := range parts {
		var v uint64
		var err error
		switch {
		case p == "":
			return netip.Addr{}, false
		case strings.HasPrefix(p, "0x") || strings.HasPrefix(p, "0X"):
			if p[2:] != "" {
				v, err = strconv.ParseUint(p[2:], 16, 32)
			}
		case len(p) > 1 && p[0] == '0':
			v, err = strconv.ParseUint(p[1:], 8, 32)
		default:
			v, err = strconv.ParseUint(p, 10, 32)
		}
		if err != nil || strings.ContainsAny(p, "+-_") {
			return netip.Addr{}, false
		}
		vals[i] = v
	}
	var b [4]byte
	last := vals[len(vals)-1]
	for i := 0; i < len(vals)-1; i++ {
		if vals[i] > 255 {
			return netip.Addr{}, false
		}
		b[i] = byte(vals[i])
	}
	rest := 4 - (len(vals) - 1)
	if rest < 4 && last >= 1<<(8*rest) {
		return netip.Addr{}, false
	}
	for i := 3; i >= len(vals)-1; i-- {
		b[i] = byte(last)
		last >>= 8
	}
	return netip.AddrFrom4(b), true
}

func FuzzCheckHost(f *testing.F) {
	for _, s := range []string{
		"example.com", "localhost", "a.localhost.", "127.0.0.1", "127.1", "2130706433",
		"0x7f000001", "0177.0.0.1", "0x7f.0.0.1", "010.0.0.1", "0x", "0", "1.2.3.4.5",
		"[::1]", "[::ffff:127.0.0.1]", "fe80::1%eth0", "64:ff9b::7f00:1", "2002:7f00:1::",
		"8.8.8.8", "0xffffffff", "4294967296", "", "[]", "[", "09.1", "0x1.0x2.0x3.0x4",
	} {
		f.Add(s)
	}
	var g Guard
	off := Guard{AllowPrivate: true}
	f.Fuzz(func(t *testing.T, host string) {
		err := g.CheckHost(host)
		if err != nil && !errors.Is(err, ErrBlocked) {
			t.Fatalf("CheckHost(%q) = %v: every refusal must wrap ErrBlocked", host, err)
		}
		if err := off.CheckHost(host); err != nil {
			t.Fatalf("AllowPrivate CheckHost(%q) = %v", host, err)
		}
		h := host
		if len(h) >= 2 && h[0] == '[' && h[len(h)-1] == ']' {
			h = h[1 : len(h)-1]
		}
		if ip, perr := netip.ParseAddr(h); perr == nil {
			if (g.CheckIP(ip) != nil) != (err != nil) {
				t.Fatalf("CheckHost(%q) = %v but CheckIP = %v", host, err, g.CheckIP(ip))
			}
			return
		}
		name := strings.ToLower(strings.TrimSuffix(host, "."))
		if name == "localhost" || strings.HasSuffix(name, ".localhost") {
			if err == nil {
				t.Fatalf("CheckHost(%q) allowed a localhost name", host)
			}
			return
		}
		if strings.ContainsAny(host, " \t\n\v\f\r%[]") {
			return
		}
		if ip, ok := refInetAton(name); ok {
			if got, ok := parseIPv4(name, false); !ok || got != ip {
				t.Fatalf("parseIPv4(%q) = %v,%v; reference says %v", name, got, ok, ip)
			}
			if g.CheckIP(ip) != nil && err == nil {
				t.Fatalf("CheckHost(%q) allowed %v", host, ip)
			}
		} else if _, ok := parseIPv4(name, false); ok {
			t.Fatalf("parseIPv4(%q) accepted what the reference rejects", name)
		}
	})
}
