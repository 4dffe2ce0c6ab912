package ssrf

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestCheckIP(t *testing.T) {
	tests := []struct {
		ip     string
		reason string // "" = allowed
	}{
		// public
		{"8.8.8.8", ""},
		{"1.1.1.1", ""},
		{"93.184.216.34", ""},
		{"100.63.255.255", ""},
		{"100.128.0.0", ""},
		{"172.15.255.255", ""},
		{"172.32.0.0", ""},
		{"192.0.1.255", ""},
		{"198.17.255.255", ""},
		{"223.255.255.255", ""},
		{"2606:4700:4700::1111", ""},
		{"2a00:1450:4001:80b::200e", ""},
		{"::ffff:8.8.8.8", ""},
		{"64:ff9b::808:808", ""},
		{"2002:808:808::1", ""},
		// IPv4 blocked ranges
		{"127.0.0.1", "loopback address"},
		{"127.255.255.254", "loopback address"},
		{"10.0.0.1", "private address"},
		{"172.16.0.1", "private address"},
		{"172.31.255.255", "private address"},
		{"192.168.1.1", "private address"},
		{"169.254.169.254", "link-local address"},
		{"169.254.0.1", "link-local address"},
		{"100.64.0.1", "carrier-grade NAT address"},
		{"100.127.255.255", "carrier-grade NAT address"},
		{"0.0.0.0", "unspecified address"},
		{"0.1.2.3", "\"this network\" address"},
		{"224.0.0.1", "multicast address"},
		{"239.255.255.250", "multicast address"},
		{"255.255.255.255", "broadcast address"},
		{"240.0.0.1", "reserved address"},
		{"192.0.0.170", "IETF protocol assignment address"},
		{"192.0.2.1", "documentation address"},
		{"198.51.100.7", "documentation address"},
		{"203.0.113.9", "documentation address"},
		{"198.18.0.1", "benchmarking address"},
		{"198.19.255.255", "benchmarking address"},
		{"192.88.99.1", "6to4 relay anycast address"},
		// IPv6 blocked ranges
		{"::1", "loopback address"},
		{"::", "unspecified address"},
		{"fc00::1", "unique local address"},
		{"fd12:3456:789a::1", "unique local address"},
		{"fd00:ec2::254", "unique local address"},
		{"fe80::1", "link-local address"},
		{"fe80::1%eth0", "link-local address"},
		{"febf::1", "link-local address"},
		{"fec0::1", "site-local address"},
		{"ff02::1", "multicast address"},
		{"ff0e::1", "multicast address"},
		{"2001:db8::1", "documentation address"},
		{"3fff::1", "documentation address"},
		{"2001::1", "Teredo address"},
		{"2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo address"},
		{"2001:2::1", "benchmarking address"},
		{"2001:10::1", "ORCHID address"},
		{"2001:20::1", "ORCHID address"},
		{"64:ff9b:1::a00:1", "local-use NAT64 address"},
		{"100::1", "discard-only address"},
		{"::7f00:1", "IPv4-compatible address"},
		{"::8.8.8.8", "IPv4-compatible address"},
		{"5f00::1", "segment routing address"},
		{"4000::1", "non-global IPv6 address"},
		{"1::1", "non-global IPv6 address"},
		// IPv6 embedding a blocked IPv4
		{"::ffff:127.0.0.1", "loopback address"},
		{"::ffff:7f00:1", "loopback address"},
		{"::ffff:169.254.169.254", "link-local address"},
		{"::ffff:10.0.0.1", "private address"},
		{"::ffff:0.0.0.0", "unspecified address"},
		{"64:ff9b::127.0.0.1", "loopback address"},
		{"64:ff9b::a9fe:a9fe", "link-local address"},
		{"64:ff9b::c0a8:101", "private address"},
		{"2002:7f00:1::", "loopback address"},
		{"2002:a9fe:a9fe::1", "link-local address"},
		{"2002:c0a8:0101::1", "private address"},
	}
	var g Guard
	for _, tc := range tests {
		t.Run(tc.ip, func(t *testing.T) {
			err := g.CheckIP(netip.MustParseAddr(tc.ip))
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("CheckIP(%s) = %v, want allowed", tc.ip, err)
				}
				return
			}
			var be *BlockedError
			if !errors.As(err, &be) || !errors.Is(err, ErrBlocked) {
				t.Fatalf("CheckIP(%s) = %v, want *BlockedError wrapping ErrBlocked", tc.ip, err)
			}
			if be.Reason != tc.reason {
				t.Fatalf("CheckIP(%s) reason = %q, want %q", tc.ip, be.Reason, tc.reason)
			}
		})
	}
}

func TestCheckIPMessages(t *testing.T) {
	var g Guard
	tests := []struct{ ip, want string }{
		{"127.0.0.1", "loopback address 127.0.0.1 is not allowed"},
		{"::ffff:127.0.0.1", "loopback address 127.0.0.1 (in ::ffff:127.0.0.1) is not allowed"},
		{"2002:a9fe:a9fe::", "link-local address 169.254.169.254 (in 2002:a9fe:a9fe::) is not allowed"},
		{"fe80::1%eth0", "link-local address fe80::1%eth0 is not allowed"},
	}
	for _, tc := range tests {
		if got := g.CheckIP(netip.MustParseAddr(tc.ip)).Error(); got != tc.want {
			t.Errorf("CheckIP(%s) = %q, want %q", tc.ip, got, tc.want)
		}
	}
	if err := g.CheckIP(netip.Addr{}); !errors.Is(err, ErrBlocked) {
		t.Errorf("CheckIP(zero Addr) = %v, want ErrBlocked", err)
	}
}

func TestGuardConfiguration(t *testing.T) {
	allow, err := ParseCIDRs("10.1.0.0/16, 127.0.0.1, fd00::/8")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		guard   *Guard
		ip      string
		blocked bool
	}{
		{"nil guard blocks loopback", nil, "127.0.0.1", true},
		{"nil guard allows public", nil, "8.8.8.8", false},
		{"zero guard blocks metadata", &Guard{}, "169.254.169.254", true},
		{"AllowPrivate allows loopback", &Guard{AllowPrivate: true}, "127.0.0.1", false},
		{"AllowPrivate allows metadata", &Guard{AllowPrivate: true}, "169.254.169.254", false},
		{"allow list hit", &Guard{AllowCIDRs: allow}, "10.1.200.3", false},
		{"allow list miss in same /8", &Guard{AllowCIDRs: allow}, "10.2.0.1", true},
		{"allow list single address", &Guard{AllowCIDRs: allow}, "127.0.0.1", false},
		{"allow list single address only", &Guard{AllowCIDRs: allow}, "127.0.0.2", true},
		{"allow list covers mapped form", &Guard{AllowCIDRs: allow}, "::ffff:10.1.0.9", false},
		{"allow list covers NAT64 form", &Guard{AllowCIDRs: allow}, "64:ff9b::a01:9", false},
		{"allow list v6", &Guard{AllowCIDRs: allow}, "fd00::5", false},
		{"allow list v6 zoned", &Guard{AllowCIDRs: allow}, "fd00::5%eth0", false},
		{"allow list v6 miss", &Guard{AllowCIDRs: allow}, "fc00::5", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.guard.CheckIP(netip.MustParseAddr(tc.ip))
			if got := errors.Is(err, ErrBlocked); got != tc.blocked {
				t.Fatalf("CheckIP(%s) = %v, want blocked=%v", tc.ip, err, tc.blocked)
			}
		})
	}
}

func TestControl(t *testing.T) {
	tests := []struct {
		name    string
		guard   *Guard
		network string
		address string
		blocked bool
	}{
		{"loopback v4", nil, "tcp4", "127.0.0.1:80", true},
		{"loopback v6", nil, "tcp6", "[::1]:443", true},
		{"zoned link-local", nil, "tcp6", "[fe80::1%eth0]:443", true},
		{"mapped loopback", nil, "tcp6", "[::ffff:127.0.0.1]:80", true},
		{"metadata", nil, "tcp4", "169.254.169.254:80", true},
		{"public v4", nil, "tcp4", "8.8.8.8:443", false},
		{"public v6", nil, "tcp6", "[2606:4700:4700::1111]:443", false},
		{"unparsable", nil, "tcp", "localhost:80", true},
		{"no port", nil, "tcp", "8.8.8.8", true},
		{"guard off", &Guard{AllowPrivate: true}, "tcp4", "127.0.0.1:80", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.guard.Control(tc.network, tc.address, nil)
			if got := errors.Is(err, ErrBlocked); got != tc.blocked {
				t.Fatalf("Control(%s) = %v, want blocked=%v", tc.address, err, tc.blocked)
			}
			if _, perr := netip.ParseAddrPort(tc.address); perr == nil && err != nil && strings.Contains(err.Error(), ":80") {
				t.Fatalf("error %q should name the address, not ip:port", err)
			}
		})
	}
}

// TestControlInDialer runs the guard where it is meant to run: inside a real
// dial, after name resolution.
func TestControlInDialer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())

	dial := func(g *Guard, host string) error {
		d := net.Dialer{Timeout: 10 * time.Second, Control: g.Control}
		c, err := d.DialContext(context.Background(), "tcp", net.JoinHostPort(host, port))
		if err == nil {
			_ = c.Close()
		}
		return err
	}
	if err := dial(nil, "127.0.0.1"); !errors.Is(err, ErrBlocked) {
		t.Errorf("dial 127.0.0.1 with guard on: %v, want ErrBlocked", err)
	}
	if err := dial(nil, "localhost"); !errors.Is(err, ErrBlocked) {
		t.Errorf("dial localhost with guard on: %v, want ErrBlocked", err)
	}
	if err := dial(&Guard{AllowPrivate: true}, "127.0.0.1"); err != nil {
		t.Errorf("dial with AllowPrivate: %v", err)
	}
	allow := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	if err := dial(&Guard{AllowCIDRs: allow}, "127.0.0.1"); err != nil {
		t.Errorf("dial with 127.0.0.1/32 allowed: %v", err)
	}
}

func TestParseCIDRs(t *testing.T) {
	tests := []struct {
		spec    string
		want    []string
		wantErr string
	}{
		{"", nil, ""},
		{" , ", nil, ""},
		{"10.1.0.0/16,192.168.5.0/24", []string{"10.1.0.0/16", "192.168.5.0/24"}, ""},
		{" 10.1.2.3/16 ", []string{"10.1.0.0/16"}, ""},
		{"127.0.0.1,::1", []string{"127.0.0.1/32", "::1/128"}, ""},
		{"fd00::/8", []string{"fd00::/8"}, ""},
		{"10.0.0.0/8,nope", nil, `"nope"`},
		{"10.0.0.0/33", nil, `"10.0.0.0/33"`},
		{"fe80::1%eth0", nil, `"fe80::1%eth0"`},
	}
	for _, tc := range tests {
		t.Run(tc.spec, func(t *testing.T) {
			got, err := ParseCIDRs(tc.spec)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseCIDRs(%q) error = %v, want one naming %s", tc.spec, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("ParseCIDRs(%q) = %v, want %v", tc.spec, got, tc.want)
			}
			for i := range got {
				if got[i].String() != tc.want[i] {
					t.Fatalf("ParseCIDRs(%q)[%d] = %s, want %s", tc.spec, i, got[i], tc.want[i])
				}
			}
		})
	}
}
