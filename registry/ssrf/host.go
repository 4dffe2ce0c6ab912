package ssrf

import (
	"net/netip"
	"strings"
)

// localNames resolve to loopback from /etc/hosts on common systems, without
// any DNS query, so refusing them at registration is cheap and certain.
var localNames = map[string]bool{
	"localhost":             true,
	"localhost.localdomain": true,
	"ip6-localhost":         true,
	"ip6-loopback":          true,
}

// CheckHost is the registration-time check of a URL's host (as returned by
// url.URL.Hostname; surrounding brackets are tolerated). It refuses
// localhost names and IP literals in a refused range, including every IPv4
// spelling that inet_aton(3) and WHATWG URL parsers accept (2130706433,
// 0x7f000001, 0177.0.0.1, 127.1, ...). Any other name passes without a DNS
// lookup: where it points is checked at dial time by Control.
func (g *Guard) CheckHost(host string) error {
	if g.off() {
		return nil
	}
	h := host
	if len(h) >= 2 && h[0] == '[' && h[len(h)-1] == ']' {
		h = h[1 : len(h)-1]
	}
	if h == "" {
		return &BlockedError{Reason: "empty host", Addr: "\"\""}
	}
	if ip, err := netip.ParseAddr(h); err == nil {
		return g.check(ip, "")
	}
	// A single trailing dot makes a name fully qualified but does not change
	// what it resolves to, and URL parsers accept it after an IPv4 literal.
	name := strings.ToLower(strings.TrimSuffix(h, "."))
	if localNames[name] || strings.HasSuffix(name, ".localhost") {
		return &BlockedError{Reason: "local host name", Addr: host}
	}
	// inet_aton stops at the first whitespace and ignores the rest; a zone
	// suffix is cut too, as resolvers would ignore or reject it.
	if i := strings.IndexAny(name, " \t\n\v\f\r%"); i >= 0 {
		name = name[:i]
	}
	for _, ip := range legacyIPv4(name) {
		via := ""
		if ip.String() != host {
			via = host
		}
		if err := g.check(ip, via); err != nil {
			return err
		}
	}
	return nil
}

// legacyIPv4 returns the addresses s denotes as an IPv4 literal. Usually that
// is zero or one address; it is two when s has leading-zero decimal parts,
// which inet_aton reads as octal but other parsers read as decimal
// (010.0.0.1 is 8.0.0.1 or 10.0.0.1): both readings must be acceptable.
func legacyIPv4(s string) []netip.Addr {
	var out []netip.Addr
	if ip, ok := parseIPv4(s, false); ok {
		out = append(out, ip)
	}
	if ip, ok := parseIPv4(s, true); ok && (len(out) == 0 || ip != out[0]) {
		out = append(out, ip)
	}
	return out
}

// parseIPv4 implements the inet_aton grammar: one to four dot-separated
// numbers, each decimal, octal (leading 0) or hex (leading 0x); the last
// number fills all remaining bytes. With decimalZeros, leading zeros do not
// select octal.
func parseIPv4(s string, decimalZeros bool) (netip.Addr, bool) {
	var parts [4]uint64
	n := 0
	for {
		dot := strings.IndexByte(s, '.')
		field := s
		if dot >= 0 {
			field = s[:dot]
		}
		if n == len(parts) {
			return netip.Addr{}, false
		}
		v, ok := parseIPv4Number(field, decimalZeros)
		if !ok {
			return netip.Addr{}, false
		}
		parts[n] = v
		n++
		if dot < 0 {
			break
		}
		s = s[dot+1:]
	}
	var v uint64
	for i := 0; i < n-1; i++ {
		if parts[i] > 0xff {
			return netip.Addr{}, false
		}
		v = v<<8 | parts[i]
	}
	lastBits := uint(8 * (5 - n))
	if parts[n-1] >= 1<<lastBits {
		return netip.Addr{}, false
	}
	v = v<<lastBits | parts[n-1]
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), true
}

func parseIPv4Number(s string, decimalZeros bool) (uint64, bool) {
	if s == "" {
		return 0, false
	}
	base := uint64(10)
	switch {
	case len(s) >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X'):
		base, s = 16, s[2:] // a bare "0x" is zero, as in inet_aton
	case len(s) >= 2 && s[0] == '0' && !decimalZeros:
		base, s = 8, s[1:]
	}
	var v uint64
	for i := 0; i < len(s); i++ {
		d, ok := digit(s[i])
		if !ok || d >= base {
			return 0, false
		}
		v = v*base + d
		if v > 0xffffffff {
			return 0, false
		}
	}
	return v, true
}

func digit(c byte) (uint64, bool) {
	switch {
	case '0' <= c && c <= '9':
		return uint64(c - '0'), true
	case 'a' <= c && c <= 'f':
		return uint64(c-'a') + 10, true
	case 'A' <= c && c <= 'F':
		return uint64(c-'A') + 10, true
	}
	return 0, false
}
