package natsconn

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestEmbeddedLimits(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range []struct {
		name                 string
		cfg                  EmbeddedConfig
		store, mem           int64
		payload              int64
		wantErr              bool
		reserveBeyondRefused bool // a stream asking for more than the store is refused
	}{
		{name: "zero values are the defaults", store: DefaultMaxStore, mem: DefaultMaxMemory, payload: DefaultMaxPayload},
		{name: "sized", cfg: EmbeddedConfig{MaxStore: 8 << 20, MaxMemory: 1 << 20, MaxPayload: 64 << 10},
			store: 8 << 20, mem: 1 << 20, payload: 64 << 10, reserveBeyondRefused: true},
		{name: "negative store", cfg: EmbeddedConfig{MaxStore: -1}, wantErr: true},
		{name: "negative memory", cfg: EmbeddedConfig{MaxMemory: -1}, wantErr: true},
		{name: "payload over the server's 64 MiB", cfg: EmbeddedConfig{MaxPayload: 65 << 20}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.Listen, cfg.StoreDir, cfg.Logger = "127.0.0.1:0", t.TempDir(), quiet
			emb, err := StartEmbedded(cfg)
			if tc.wantErr {
				if err == nil {
					emb.Shutdown()
					t.Fatal("accepted")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer emb.Shutdown()
			jc := emb.Server().JetStreamConfig()
			if jc == nil || jc.MaxStore != tc.store || jc.MaxMemory != tc.mem {
				t.Fatalf("JetStream config %+v, want store %d memory %d", jc, tc.store, tc.mem)
			}
			nc, err := nats.Connect(emb.ClientURL())
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			if got := nc.MaxPayload(); got != tc.payload {
				t.Errorf("max payload %d, want %d", got, tc.payload)
			}
			if !tc.reserveBeyondRefused {
				return
			}
			// The server reserves every stream's MaxBytes out of the store,
			// which is what lets capacity.Budget split it safely.
			js, _ := jetstream.New(nc)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "HALF", Subjects: []string{"half"}, MaxBytes: tc.store / 2}); err != nil {
				t.Fatal(err)
			}
			if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "MORE", Subjects: []string{"more"}, MaxBytes: tc.store/2 + 1}); err == nil {
				t.Error("a stream reserving more than the store has left was created")
			}
		})
	}
}
