package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/webhookd/webhookd/events"
)

// apiClient talks to webhookd's management API over keep-alive
// connections, enough of them for every registration worker.
type apiClient struct {
	t    target
	http *http.Client
}

func newAPIClient(t target, conns int) *apiClient {
	tr := &http.Transport{MaxIdleConns: conns, MaxIdleConnsPerHost: conns, IdleConnTimeout: time.Minute}
	return &apiClient{t: t, http: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

func (c *apiClient) close() { c.http.CloseIdleConnections() }

// registration is what POST /api/webhook returned.
type registration struct {
	ID     string `json:"id"`
	Secret string `json:"secret"`
}

// register creates one subscription; 429 and 503 are retried.
func (c *apiClient) register(ctx context.Context, url string, t events.Type, workflowID string) (registration, error) {
	body, err := json.Marshal(map[string]string{"url": url, "eventType": string(t), "workflowId": workflowID})
	if err != nil {
		return registration{}, fmt.Errorf("register: %w", err)
	}
	var env struct {
		Status string       `json:"status"`
		Data   registration `json:"data"`
	}
	if err := c.do(ctx, http.MethodPost, "/api/webhook", body, &env); err != nil {
		return registration{}, fmt.Errorf("register: %w", err)
	}
	if env.Status != "success" || env.Data.ID == "" || env.Data.Secret == "" {
		return registration{}, fmt.Errorf("register: answer without id or secret (status %q)", env.Status)
	}
	return env.Data, nil
}

// remove deletes one subscription (cleanup on an external daemon).
func (c *apiClient) remove(ctx context.Context, id string) error {
	if err := c.do(ctx, http.MethodDelete, "/api/webhook/"+id, nil, nil); err != nil {
		return fmt.Errorf("delete %s: %w", id, err)
	}
	return nil
}

var errAPI = errors.New("API error")

func (c *apiClient) do(ctx context.Context, method, path string, body []byte, out any) error {
	for attempt := 1; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, method, c.t.api+path, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("x-copy-ai-api-key", c.t.apiKey)
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := c.http.Do(req)
		if err != nil {
			return err
		}
		raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		_ = resp.Body.Close()
		if err != nil {
			return err
		}
		switch {
		case resp.StatusCode == http.StatusOK:
			if out == nil {
				return nil
			}
			return json.Unmarshal(raw, out)
		case (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable) && attempt < 10:
			wait := time.Duration(attempt) * 100 * time.Millisecond
			if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
				wait = time.Duration(s) * time.Second
			}
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return ctx.Err()
			}
		default:
			return fmt.Errorf("%w: %s %s: %s: %.300s", errAPI, method, path, resp.Status, raw)
		}
	}
}

// parallel runs fn(i) for i in 0..n-1 on workers goroutines, stopping at
// the first error.
func parallel(ctx context.Context, n, workers int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(workers, max(n, 1)) {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(ctx, i); err != nil {
					cancel(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return ctx.Err()
}

// coldShape spreads the subscriptions no bench event matches over every
// event type and many workflows of the bench workspace, the index's worst
// neighbours for the hot ones: same workspace, same type for a quarter.
func coldShape(i int) (events.Type, string) {
	return events.Types[i%len(events.Types)], "wf-cold-" + strconv.Itoa(i)
}
