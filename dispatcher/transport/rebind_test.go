package transport

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/webhookd/webhookd/registry"
	"github.com/webhookd/webhookd/registry/ssrf"
)

// dnsStub answers every A query with 127.0.0.1 — a name that looked
// harmless at registration and resolves to loopback at delivery time, which
// is what a DNS-rebinding attacker arranges.
func dnsStub(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if n < 12 {
				continue
			}
			q := buf[:n]
			// Find the end of the question: QNAME labels, then QTYPE and QCLASS.
			i := 12
			for i < n && q[i] != 0 {
				i += int(q[i]) + 1
			}
			if i+5 > n {
				continue
			}
			qtype := binary.BigEndian.Uint16(q[i+1:])
			question := q[12 : i+5]
			resp := make([]byte, 12, 64)
			copy(resp, q[:2])                            // id
			binary.BigEndian.PutUint16(resp[2:], 0x8180) // response, recursion available, no error
			binary.BigEndian.PutUint16(resp[4:], 1)      // one question
			resp = append(resp, question...)
			if qtype == 1 { // A
				binary.BigEndian.PutUint16(resp[6:], 1) // one answer
				resp = append(resp, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 127, 0, 0, 1)
			}
			_, _ = pc.WriteTo(resp, addr)
		}
	}()
	return pc.LocalAddr().String()
}

func TestDNSRebindingBlockedAtDialTime(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { hits.Add(1) }))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(srv.URL, "http://"))
	url := "http://rebind.test:" + port + "/hook"

	// Registration does no DNS: the name is accepted.
	if err := (registry.Validator{}).Validate(registry.Input{URL: url, EventType: "workflowRun.completed"}); err != nil {
		t.Fatalf("registration refused a plain host name: %v", err)
	}

	stub := dnsStub(t)
	resolver := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", stub)
	}}
	post := func(g *ssrf.Guard) error {
		c, err := NewClient(Config{Timeout: 3 * time.Second, Guard: g, Resolver: resolver})
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.Post(url, "application/json", strings.NewReader(`{}`))
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	// Delivery time: the name now resolves to 127.0.0.1 and is refused.
	if err := post(&ssrf.Guard{}); !errors.Is(err, ssrf.ErrBlocked) {
		t.Fatalf("dial to a rebinding name: err = %v, want ErrBlocked", err)
	}
	if hits.Load() != 0 {
		t.Fatal("the loopback receiver was reached")
	}
	// The same request with the guard lifted does arrive, proving the stub
	// resolver was really the one used.
	if err := post(&ssrf.Guard{AllowPrivate: true}); err != nil {
		t.Fatalf("with private targets allowed: %v", err)
	}
	if hits.Load() != 1 {
		t.Fatalf("receiver hits = %d, want 1", hits.Load())
	}
}
