package api

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// Forwarding headers Config.ForwardedHeader may name.
const (
	HeaderXForwardedFor = "X-Forwarded-For"
	HeaderForwarded     = "Forwarded" // RFC 7239
)

// maxForwardHops bounds how many hops of a forwarding header are walked.
const maxForwardHops = 32

// clientResolver finds the address a request's failed authentications are
// charged to.
type clientResolver struct {
	trusted []netip.Prefix
	header  string // canonical; "" when no proxy is trusted
}

func newClientResolver(trusted []netip.Prefix, header string) (clientResolver, error) {
	switch http.CanonicalHeaderKey(header) {
	case "", HeaderXForwardedFor:
		header = HeaderXForwardedFor
	case HeaderForwarded:
		header = HeaderForwarded
	default:
		return clientResolver{}, fmt.Errorf("api: Config.ForwardedHeader must be %q or %q, got %q",
			HeaderXForwardedFor, HeaderForwarded, header)
	}
	out := make([]netip.Prefix, 0, len(trusted))
	for _, p := range trusted {
		if !p.IsValid() {
			return clientResolver{}, fmt.Errorf("api: Config.TrustedProxies holds an invalid prefix %q", p)
		}
		out = append(out, unmapPrefix(p))
	}
	if len(out) == 0 {
		header = ""
	}
	return clientResolver{trusted: out, header: header}, nil
}

// client returns the rate-limiting identity of r: the direct peer, or —
// only when the peer is a trusted proxy — the nearest address in the
// configured forwarding header that is not itself a trusted proxy (the
// "rightmost untrusted" rule: hops a client wrote itself sit to the left of
// those the proxies appended, so they are never reached). A hop that cannot
// be parsed ends the walk at the last trusted address. IPv6 clients are
// grouped by /64. Unparseable peers (e.g. unix sockets) share the zero key.
func (c clientResolver) client(r *http.Request) netip.Addr {
	peer := peerAddr(r.RemoteAddr)
	if c.header == "" || !c.isTrusted(peer) {
		return group(peer)
	}
	var hops []string
	if c.header == HeaderForwarded {
		hops = forwardedFor(r.Header.Values(HeaderForwarded))
	} else {
		hops = xForwardedFor(r.Header.Values(HeaderXForwardedFor))
	}
	return group(pickClient(hops, peer, c.isTrusted))
}

func (c clientResolver) isTrusted(a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	for _, p := range c.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// unmapPrefix masks p and rewrites an IPv4-mapped IPv6 prefix
// (::ffff:10.0.0.0/104) as IPv4 (10.0.0.0/8), since peers are unmapped
// before they are compared.
func unmapPrefix(p netip.Prefix) netip.Prefix {
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(a.Unmap(), p.Bits()-96).Masked()
	}
	return p.Masked()
}

// pickClient walks hops from the nearest (rightmost) outwards.
func pickClient(hops []string, peer netip.Addr, trusted func(netip.Addr) bool) netip.Addr {
	client := peer
	for i, n := len(hops)-1, 0; i >= 0 && n < maxForwardHops; i, n = i-1, n+1 {
		a, ok := parseHop(hops[i])
		if !ok {
			return client
		}
		client = a
		if !trusted(a) {
			return a
		}
	}
	return client
}

// peerAddr is RemoteAddr's IP, IPv4-mapped addresses unmapped and zones
// dropped; invalid when RemoteAddr holds no IP.
func peerAddr(remoteAddr string) netip.Addr {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	return addr.Unmap().WithZone("")
}

// group maps an IPv6 address to its /64, since one host usually owns a
// whole /64.
func group(addr netip.Addr) netip.Addr {
	if addr.Is6() {
		if p, err := addr.Prefix(64); err == nil {
			return p.Addr()
		}
	}
	return addr
}

// clientKey is the identity of a direct peer without proxies.
func clientKey(remoteAddr string) netip.Addr { return group(peerAddr(remoteAddr)) }

// parseHop reads one forwarding hop: "192.0.2.1", "192.0.2.1:80",
// "2001:db8::1", "[2001:db8::1]" or "[2001:db8::1]:80", optionally quoted.
// "unknown", obfuscated identifiers ("_hidden") and anything else fail.
func parseHop(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		s = s[1 : len(s)-1]
	}
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return netip.Addr{}, false
		}
		rest := s[end+1:]
		if rest != "" && (rest[0] != ':' || !isPort(rest[1:])) {
			return netip.Addr{}, false
		}
		s = s[1:end]
	} else if i := strings.IndexByte(s, ':'); i >= 0 && strings.Count(s, ":") == 1 {
		if !isPort(s[i+1:]) {
			return netip.Addr{}, false
		}
		s = s[:i]
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

func isPort(s string) bool {
	if s == "" || len(s) > 5 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// xForwardedFor splits X-Forwarded-For header lines into hops, in order.
func xForwardedFor(values []string) []string {
	var hops []string
	for _, v := range values {
		for _, h := range strings.Split(v, ",") {
			hops = append(hops, strings.TrimSpace(h))
		}
	}
	return hops
}

// forwardedFor extracts each element's for= value from Forwarded header
// lines (RFC 7239), in order. An element without for= yields "" (an
// unparseable hop), so that it ends the walk rather than being skipped.
func forwardedFor(values []string) []string {
	var hops []string
	for _, v := range values {
		for _, elem := range splitQuoted(v, ',') {
			hop := ""
			for _, pair := range splitQuoted(elem, ';') {
				name, value, ok := strings.Cut(strings.TrimSpace(pair), "=")
				if ok && strings.EqualFold(strings.TrimSpace(name), "for") {
					hop = unquote(strings.TrimSpace(value))
					break
				}
			}
			hops = append(hops, hop)
		}
	}
	return hops
}

// splitQuoted splits s at sep outside double-quoted strings (which may
// hold backslash escapes).
func splitQuoted(s string, sep byte) []string {
	var parts []string
	start, quoted := 0, false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case quoted && c == '\\':
			i++
		case c == '"':
			quoted = !quoted
		case !quoted && c == sep:
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	return append(parts, s[start:])
}

// unquote undoes an RFC 7230 quoted-string; anything else is returned as is.
func unquote(s string) string {
	if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' {
		return s
	}
	s = s[1 : len(s)-1]
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// ParseTrustedProxies parses a comma-separated list of CIDRs or single
// addresses ("10.0.0.0/8,192.0.2.7,2001:db8::/32") for
// Config.TrustedProxies. Errors name the entry's position.
func ParseTrustedProxies(spec string) ([]netip.Prefix, error) {
	spec = strings.TrimSpace(spec)
	if spec == "" {
		return nil, nil
	}
	var out []netip.Prefix
	for i, entry := range strings.Split(spec, ",") {
		entry = strings.TrimSpace(entry)
		if strings.Contains(entry, "/") {
			p, err := netip.ParsePrefix(entry)
			if err != nil {
				return nil, fmt.Errorf("entry %d: %w", i+1, err)
			}
			out = append(out, unmapPrefix(p))
			continue
		}
		a, err := netip.ParseAddr(entry)
		if err != nil || a.Zone() != "" {
			return nil, fmt.Errorf("entry %d: %q is neither a CIDR nor an IP address", i+1, entry)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}
