package natsconn

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// selfSigned writes a CA-less self-signed certificate for 127.0.0.1 and
// returns the cert and key paths.
func selfSigned(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "nats-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	_ = os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	_ = os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	return certFile, keyFile
}

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuf) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

func TestConnectUserPasswordOverTLS(t *testing.T) {
	certFile, keyFile := selfSigned(t)
	tlsCfg, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: certFile, KeyFile: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true,
		Username: "webhookd", Password: "s3cret-pass", TLS: true, TLSConfig: tlsCfg})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	defer ns.Shutdown()
	url := "tls://" + ns.Addr().String()

	nc, err := Connect(Config{URL: url, User: "webhookd", Password: "s3cret-pass", CAFile: certFile})
	if err != nil {
		t.Fatal(err)
	}
	if !nc.IsConnected() {
		t.Fatalf("not connected: %v", nc.LastError())
	}
	if st, err := nc.TLSConnectionState(); err != nil || !st.HandshakeComplete || st.Version < tls.VersionTLS12 {
		t.Fatalf("connection is not TLS 1.2+: %v", err)
	}
	nc.Close()

	// Wrong password: Connect returns a connection that keeps retrying, and
	// the reason is logged.
	logs := &lockedBuf{}
	nc, err = Connect(Config{URL: url, User: "webhookd", Password: "wrong", CAFile: certFile,
		ReconnectWait: 50 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(strings.ToLower(logs.String()), "authorization") {
		if time.Now().After(deadline) {
			t.Fatalf("authorization failure not logged; logs: %s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if nc.IsConnected() {
		t.Error("connected with a wrong password")
	}
	// nats.go closes a connection after the same auth error twice; the
	// daemon's connection keeps trying so fixed credentials recover it.
	time.Sleep(300 * time.Millisecond)
	if nc.IsClosed() {
		t.Error("connection closed for good after repeated authorization failures")
	}

	// Without the CA the server's certificate is not trusted.
	nc2, err := Connect(Config{URL: url, User: "webhookd", Password: "s3cret-pass", ReconnectWait: 50 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&lockedBuf{}, nil))})
	if err == nil {
		defer nc2.Close()
		time.Sleep(300 * time.Millisecond)
		if nc2.IsConnected() {
			t.Error("connected to an untrusted certificate")
		}
	}
}

func TestConfigValidation(t *testing.T) {
	bad := []Config{
		{},
		{URL: "nats://x", Token: "t", User: "u", Password: "p"},
		{URL: "nats://x", User: "u"},
		{URL: "nats://x", CertFile: "c"},
		{URL: "nats://x", CredsFile: "/no/such/file.creds"},
	}
	for i, c := range bad {
		if _, err := Connect(c); err == nil {
			t.Errorf("case %d: accepted %+v", i, c)
		}
	}
}

func TestEmbeddedServer(t *testing.T) {
	e, err := StartEmbedded(EmbeddedConfig{Listen: "127.0.0.1:0", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := Connect(Config{URL: e.ClientURL(), InProcess: e.Server()})
	if err != nil || !nc.IsConnected() {
		t.Fatalf("connect: %v", err)
	}
	nc.Close()
	// A second server on the same port fails with a clear message.
	host := strings.TrimPrefix(e.ClientURL(), "nats://")
	if _, err := StartEmbedded(EmbeddedConfig{Listen: host, StoreDir: t.TempDir(), StartTimeout: 2 * time.Second}); err == nil {
		t.Error("second embedded server on a taken port started")
	}
	e.Shutdown()
	if _, err := StartEmbedded(EmbeddedConfig{Listen: "nonsense", StoreDir: t.TempDir()}); err == nil {
		t.Error("bad listen address accepted")
	}
}
