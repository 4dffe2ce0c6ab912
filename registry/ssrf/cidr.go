package ssrf

import (
	"fmt"
	"net/netip"
	"strings"
)

// ParseCIDRs parses a comma-separated list such as
// "10.1.0.0/16, 192.168.5.0/24, fd00::1" into prefixes for Guard.AllowCIDRs.
// A bare address means just that address. Empty entries are skipped; the
// error names the first bad entry.
func ParseCIDRs(spec string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, entry := range strings.Split(spec, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		if !strings.Contains(entry, "/") {
			ip, err := netip.ParseAddr(entry)
			if err != nil || ip.Zone() != "" {
				return nil, fmt.Errorf("ssrf: allowed CIDR %q: not an address or prefix", entry)
			}
			out = append(out, netip.PrefixFrom(ip, ip.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(entry)
		if err != nil {
			return nil, fmt.Errorf("ssrf: allowed CIDR %q: %w", entry, err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}
