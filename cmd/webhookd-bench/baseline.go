package main

import (
	"bytes"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/webhookd/webhookd/dispatcher/signature"
)

// baseline measures the loopback ceiling: the same receiver code hit
// directly with signed keep-alive POSTs at webhookd's per-host
// concurrency, for d.
func baseline(d time.Duration, concurrency, bodyBytes int) (float64, error) {
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	r, err := newReceiver(healthy, 1<<24)
	if err != nil {
		return 0, err
	}
	defer r.close()
	if err := r.add("/raw", secret); err != nil {
		return 0, err
	}
	sec, _ := signature.ParseSecret(secret)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: concurrency, MaxConnsPerHost: concurrency}}
	pad := strings.Repeat("x", max(0, bodyBytes-150))
	var seq atomic.Int64
	var errs atomic.Int64
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for w := 0; w < concurrency; w++ {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				i := seq.Add(1) - 1
				body := fmt.Appendf(nil, `{"type":"workflowRun.completed","workflowId":"WF","workflowRunId":"run-%d","seq":%d,"sched":%d,"result":{"text":%q}}`,
					i, i, time.Now().UnixNano(), pad)
				id := "msg_raw" + strconv.FormatInt(i, 10)
				ts := time.Now().Unix()
				req, _ := http.NewRequest(http.MethodPost, r.url+"/raw", bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("webhook-id", id)
				req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
				req.Header.Set("webhook-signature", string(sec.AppendSignature(nil, id, ts, body)))
				resp, err := client.Do(req)
				if err != nil {
					errs.Add(1)
					continue
				}
				resp.Body.Close()
			}
		})
	}
	wg.Wait()
	u, _ := r.totals()
	if errs.Load() > 0 || r.badSig.Load() > 0 {
		return 0, fmt.Errorf("baseline: %d errors, %d bad signatures", errs.Load(), r.badSig.Load())
	}
	return float64(u) / d.Seconds(), nil
}
