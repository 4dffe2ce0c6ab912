package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/webhookd/webhookd/dispatcher/signature"
)

// baselineConfig shapes the raw loopback baseline after a scenario's own:
// the same receiver code (verification and ledger included), the same
// number of receivers and requests, the same body size, and as many
// keep-alive connections per receiver as webhookd held open.
type baselineConfig struct {
	Receivers   int
	Conns       int // per receiver
	Requests    int // in all; spread evenly over the receivers
	MaxDuration time.Duration
	Shape       eventShape
}

// baselineResult is the loopback ceiling for that shape.
type baselineResult struct {
	Conns     int         `json:"connsPerReceiver"`
	Requests  int64       `json:"requests"`
	Seconds   float64     `json:"seconds"`
	PerSecond float64     `json:"perSecond"`
	Latency   percentiles `json:"latency"`
}

// runBaseline posts signed events straight to fresh receivers with a
// plain net/http keep-alive client.
func runBaseline(ctx context.Context, cfg baselineConfig) (baselineResult, error) {
	perRecv := max((cfg.Requests+cfg.Receivers-1)/cfg.Receivers, 1)
	counted := make([]bool, cfg.Receivers)
	for i := range counted {
		counted[i] = true
	}
	l := newLedger(perRecv, counted)
	b := newBook(l, cfg.Shape)
	secrets := make([]signature.Secret, cfg.Receivers)
	recvs := make([]*receiver, 0, cfg.Receivers)
	defer func() {
		for _, r := range recvs {
			r.close()
		}
	}()
	for i := range cfg.Receivers {
		key := make([]byte, 32)
		_, _ = rand.Read(key)
		s := signature.SecretPrefix + base64.StdEncoding.EncodeToString(key)
		if err := b.setSecret(i, s); err != nil {
			return baselineResult{}, err
		}
		secrets[i] = *b.secrets[i].Load()
		r, err := newReceiver(healthy, b)
		if err != nil {
			return baselineResult{}, err
		}
		recvs = append(recvs, r)
	}

	ctx, cancel := context.WithTimeout(ctx, cfg.MaxDuration)
	defer cancel()
	var failures atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for i, r := range recvs {
		client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: cfg.Conns, MaxIdleConnsPerHost: cfg.Conns}}
		defer client.CloseIdleConnections()
		var next atomic.Int64
		url := r.url + subPath(i)
		for range cfg.Conns {
			wg.Go(func() {
				var body []byte
				for ctx.Err() == nil {
					seq := int(next.Add(1) - 1)
					if seq >= perRecv {
						return
					}
					now := time.Now()
					body = cfg.Shape.appendBody(body[:0], seq, now)
					id := "msg_raw_" + strconv.Itoa(i) + "_" + strconv.Itoa(seq)
					if err := post(ctx, client, url, id, now.Unix(), body, secrets[i]); err != nil {
						if ctx.Err() == nil {
							failures.Add(1)
							firstErr.CompareAndSwap(nil, err)
						}
						return
					}
				}
			})
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	if n := failures.Load(); n > 0 {
		return baselineResult{}, fmt.Errorf("baseline: %d requests failed, first: %v", n, firstErr.Load())
	}
	t := l.tally(perRecv, perRecv)
	if why := t.VoidReasons(); t.BadSignatures+t.Unexpected+t.BodyMismatch > 0 {
		return baselineResult{}, fmt.Errorf("baseline: receiver rejected its own requests: %v", why)
	}
	return baselineResult{Conns: cfg.Conns, Requests: t.Unique, Seconds: elapsed.Seconds(),
		PerSecond: float64(t.Unique) / elapsed.Seconds(), Latency: l.lat.summary()}, nil
}

// post sends one signed delivery the way webhookd does and expects 2xx.
func post(ctx context.Context, c *http.Client, url, id string, ts int64, body []byte, s signature.Secret) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	var sig [64]byte
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("webhook-id", id)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("webhook-signature", string(s.AppendSignature(sig[:0], id, ts, body)))
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("baseline POST: %s", resp.Status)
	}
	return nil
}
