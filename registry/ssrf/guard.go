// Package ssrf decides whether webhookd may send a request to a destination
// address, so that a registered webhook cannot be used to reach loopback,
// private networks, cloud metadata services or other internal endpoints.
//
// The same Guard is consulted twice: at registration (CheckHost, on the URL's
// host literal, without DNS) and at dial time (Control, installed as
// net.Dialer.Control). The dial-time check sees the address the socket is
// actually about to connect to, after DNS resolution, so a hostname that
// resolves, or later re-resolves (DNS rebinding), to an internal address is
// refused as well.
package ssrf

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"
)

// ErrBlocked is matched (errors.Is) by every refusal from a Guard.
var ErrBlocked = errors.New("destination address is not allowed")

// BlockedError says which address was refused and why. It never carries a
// URL, only a host literal, so it is safe to show to API users and to log.
type BlockedError struct {
	// Addr is the refused address (canonical form) or host name.
	Addr string
	// Reason names the refused range, e.g. "loopback address".
	Reason string
	// Via is the literal Addr was found in when it differs from Addr: an
	// IPv6 address embedding an IPv4 one, or an unusual IPv4 spelling.
	Via string
}

func (e *BlockedError) Error() string {
	if e.Via != "" {
		return fmt.Sprintf("%s %s (in %s) is not allowed", e.Reason, e.Addr, e.Via)
	}
	return fmt.Sprintf("%s %s is not allowed", e.Reason, e.Addr)
}

// Unwrap makes errors.Is(err, ErrBlocked) true.
func (e *BlockedError) Unwrap() error { return ErrBlocked }

// Guard is the SSRF policy. Its zero value, and a nil *Guard, refuse every
// non-public address.
type Guard struct {
	// AllowPrivate turns the guard off entirely (local development, tests).
	AllowPrivate bool
	// AllowCIDRs lists ranges that are reachable even though they would be
	// refused, e.g. an internal receiver at 10.1.2.3/32.
	AllowCIDRs []netip.Prefix
}

func (g *Guard) off() bool { return g != nil && g.AllowPrivate }

func (g *Guard) allowListed(ip netip.Addr) bool {
	if g == nil {
		return false
	}
	for _, p := range g.AllowCIDRs {
		if p.Contains(ip) || p.Contains(ip.Unmap()) {
			return true
		}
	}
	return false
}

// CheckIP returns a *BlockedError (matching ErrBlocked) when ip is not a
// public unicast address and is not inside AllowCIDRs.
func (g *Guard) CheckIP(ip netip.Addr) error {
	if g.off() {
		return nil
	}
	return g.check(ip, "")
}

// Control is meant for net.Dialer.Control. The dialer calls it with the
// already-resolved "ip:port" right before connecting, for every address it
// tries, which is what makes the check immune to DNS tricks.
func (g *Guard) Control(network, address string, _ syscall.RawConn) error {
	if g.off() {
		return nil
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return &BlockedError{Reason: "unparsable dial address", Addr: address}
	}
	return g.check(ap.Addr(), "")
}

// check classifies ip; via is the enclosing literal when ip was extracted
// from another address, and is only used for the error message.
func (g *Guard) check(ip netip.Addr, via string) error {
	if !ip.IsValid() {
		return &BlockedError{Reason: "invalid address", Addr: "\"\"", Via: via}
	}
	// netip.Prefix.Contains never matches a zoned address; the zone only
	// names an interface, it does not change which range the address is in.
	bare := ip.WithZone("")
	if g.allowListed(bare) {
		return nil
	}
	blocked := func(reason string) error {
		return &BlockedError{Reason: reason, Addr: ip.String(), Via: via}
	}
	if bare.Is4() {
		if r := lookup(ipv4Ranges, bare); r != "" {
			return blocked(r)
		}
		return nil
	}
	if bare.Is4In6() {
		return g.check(bare.Unmap(), viaOr(via, ip))
	}
	if nat64WellKnown.Contains(bare) {
		// DNS64 synthesises these for IPv4-only hosts; the translator
		// forwards to the embedded address, so that is what must be public.
		b := bare.As16()
		return g.check(netip.AddrFrom4([4]byte(b[12:16])), viaOr(via, ip))
	}
	if sixToFour.Contains(bare) {
		b := bare.As16()
		return g.check(netip.AddrFrom4([4]byte(b[2:6])), viaOr(via, ip))
	}
	if r := lookup(ipv6Ranges, bare); r != "" {
		return blocked(r)
	}
	if !globalUnicast6.Contains(bare) {
		return blocked("non-global IPv6 address")
	}
	return nil
}

func viaOr(via string, ip netip.Addr) string {
	if via != "" {
		return via
	}
	return ip.String()
}

type blockedRange struct {
	prefix netip.Prefix
	reason string
}

func lookup(ranges []blockedRange, ip netip.Addr) string {
	for _, r := range ranges {
		if r.prefix.Contains(ip) {
			return r.reason
		}
	}
	return ""
}

var (
	nat64WellKnown = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour      = netip.MustParsePrefix("2002::/16")
	globalUnicast6 = netip.MustParsePrefix("2000::/3")
)

// Order matters where ranges nest: the more specific, more telling reason
// comes first (0.0.0.0 before 0.0.0.0/8, 255.255.255.255 before 240/4).
var ipv4Ranges = []blockedRange{
	{netip.MustParsePrefix("0.0.0.0/32"), "unspecified address"},
	{netip.MustParsePrefix("0.0.0.0/8"), "\"this network\" address"},
	{netip.MustParsePrefix("10.0.0.0/8"), "private address"},
	{netip.MustParsePrefix("100.64.0.0/10"), "carrier-grade NAT address"},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback address"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local address"},
	{netip.MustParsePrefix("172.16.0.0/12"), "private address"},
	{netip.MustParsePrefix("192.0.0.0/24"), "IETF protocol assignment address"},
	{netip.MustParsePrefix("192.0.2.0/24"), "documentation address"},
	{netip.MustParsePrefix("192.88.99.0/24"), "6to4 relay anycast address"},
	{netip.MustParsePrefix("192.168.0.0/16"), "private address"},
	{netip.MustParsePrefix("198.18.0.0/15"), "benchmarking address"},
	{netip.MustParsePrefix("198.51.100.0/24"), "documentation address"},
	{netip.MustParsePrefix("203.0.113.0/24"), "documentation address"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast address"},
	{netip.MustParsePrefix("255.255.255.255/32"), "broadcast address"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved address"},
}

// IPv4-mapped, NAT64 well-known and 6to4 addresses are handled before this
// table by checking the IPv4 address they carry. Everything outside 2000::/3
// that is not listed here is refused as non-global afterwards.
var ipv6Ranges = []blockedRange{
	{netip.MustParsePrefix("::/128"), "unspecified address"},
	{netip.MustParsePrefix("::1/128"), "loopback address"},
	{netip.MustParsePrefix("::/96"), "IPv4-compatible address"},
	{netip.MustParsePrefix("64:ff9b:1::/48"), "local-use NAT64 address"},
	{netip.MustParsePrefix("100::/64"), "discard-only address"},
	{netip.MustParsePrefix("2001::/32"), "Teredo address"},
	{netip.MustParsePrefix("2001:2::/48"), "benchmarking address"},
	{netip.MustParsePrefix("2001:10::/28"), "ORCHID address"},
	{netip.MustParsePrefix("2001:20::/28"), "ORCHID address"},
	{netip.MustParsePrefix("2001:db8::/32"), "documentation address"},
	{netip.MustParsePrefix("3fff::/20"), "documentation address"},
	{netip.MustParsePrefix("5f00::/16"), "segment routing address"},
	{netip.MustParsePrefix("fc00::/7"), "unique local address"},
	{netip.MustParsePrefix("fe80::/10"), "link-local address"},
	{netip.MustParsePrefix("fec0::/10"), "site-local address"},
	{netip.MustParsePrefix("ff00::/8"), "multicast address"},
}
