package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

var apiClient = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 128}}

// register creates a webhook and returns its secret.
func register(t *target, url, workflowID string) (string, error) {
	body, _ := json.Marshal(map[string]string{"url": url, "eventType": "workflowRun.completed", "workflowId": workflowID})
	req, _ := http.NewRequest(http.MethodPost, t.api+"/api/webhook", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("x-copy-ai-api-key", t.apiKey)
	resp, err := apiClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("register: %d %s", resp.StatusCode, raw)
	}
	var env struct{ Data struct{ Secret string } }
	if err := json.Unmarshal(raw, &env); err != nil {
		return "", err
	}
	return env.Data.Secret, nil
}

// registerMany registers n subscriptions nobody's events match, with many
// concurrent keep-alive requests, and returns the rate achieved.
func registerMany(t *target, n, workers int) (float64, error) {
	var next atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(n) || firstErr.Load() != nil {
					return
				}
				if _, err := register(t, "https://cold.example.com/h", "WF-cold-"+strconv.FormatInt(i, 10)); err != nil {
					firstErr.Store(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return 0, err
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// publisher sends bench events through JetStream with acks.
type publisher struct {
	nc  *nats.Conn
	js  jetstream.JetStream
	pad string
}

func newPublisher(natsURL string, bodyBytes int) (*publisher, error) {
	nc, err := nats.Connect(natsURL)
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		nc.Close()
		return nil, err
	}
	return &publisher{nc: nc, js: js, pad: strings.Repeat("x", max(0, bodyBytes-150))}, nil
}

func (p *publisher) close() { p.nc.Close() }

// run publishes events 0..n-1 with workflowId wf. rate <= 0 is as fast as
// possible; otherwise event i is scheduled at start + i/rate and its
// latency counts from that scheduled time (open model: a lagging publisher
// cannot hide delay). It returns when every publish is acknowledged.
func (p *publisher) run(ctx context.Context, n int, rate float64, wf string) (time.Duration, error) {
	start := time.Now()
	var buf []byte
	for i := 0; i < n; i++ {
		sched := time.Now()
		if rate > 0 {
			sched = start.Add(schedule(i, rate))
			if d := time.Until(sched); d > 0 {
				time.Sleep(d)
			}
		}
		buf = buf[:0]
		buf = fmt.Appendf(buf, `{"type":"workflowRun.completed","workflowId":%q,"workflowRunId":"run-%d","seq":%d,"sched":%d,"result":{"text":%q}}`,
			wf, i, i, sched.UnixNano(), p.pad)
		msg := &nats.Msg{Subject: "events.bench.workflowRun.completed", Data: bytes.Clone(buf),
			Header: nats.Header{"Nats-Msg-Id": {"bench-" + strconv.FormatInt(start.UnixNano(), 36) + "-" + strconv.Itoa(i)}}}
		if _, err := p.js.PublishMsgAsync(msg, jetstream.WithStallWait(30*time.Second)); err != nil {
			return 0, fmt.Errorf("publish %d: %w", i, err)
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
	}
	select {
	case <-p.js.PublishAsyncComplete():
	case <-time.After(60 * time.Second):
		return 0, fmt.Errorf("publishes not acknowledged within 60s")
	}
	return time.Since(start), nil
}

// schedule returns the send offset of event i at rate per second.
func schedule(i int, rate float64) time.Duration {
	return time.Duration(float64(i) / rate * float64(time.Second))
}
