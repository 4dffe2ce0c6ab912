package main

import (
	"context"
	"fmt"
	"time"
)

// spec describes one scenario.
type spec struct {
	name           string
	events         int
	rate           float64 // events/s; 0 = as fast as possible
	healthy        int     // receivers answering 204
	hanging        int     // receivers that never answer
	failing        int     // receivers answering 500
	subsPerRecv    int
	cold           int  // extra subscriptions no event matches
	restart        bool // measure a restart with the registry loaded
	daemonFlags    []string
	compareHealthy bool // also run the same shape with every receiver healthy
}

// result is one scenario's measured figures.
type result struct {
	Name        string  `json:"name"`
	Events      int     `json:"events"`
	Fanout      int     `json:"fanout"`
	Expected    int     `json:"expected"`
	Received    int     `json:"received"`
	Lost        int     `json:"lost"`
	Duplicates  int     `json:"duplicates"`
	BadSig      int64   `json:"badSignatures"`
	Unexpected  int64   `json:"unexpected"`
	Seconds     float64 `json:"seconds"`
	PerSecond   float64 `json:"deliveriesPerSecond"`
	P50ms       float64 `json:"p50ms"`
	P90ms       float64 `json:"p90ms"`
	P99ms       float64 `json:"p99ms"`
	P999ms      float64 `json:"p999ms"`
	MaxMs       float64 `json:"maxms"`
	CPUms       float64 `json:"cpuMsPerDelivery"`
	PeakRSSMiB  float64 `json:"peakRssMiB"`
	Note        string  `json:"note,omitempty"`
	HealthyP99  float64 `json:"healthyP99msAllHealthy,omitempty"`
	Void        bool    `json:"void"`
	VoidReason  string  `json:"voidReason,omitempty"`
	StartupSecs float64 `json:"startupSeconds,omitempty"`
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// run executes s against a fresh daemon (or the external one).
func (b *bench) run(s spec) (result, error) {
	t, err := b.target(s.daemonFlags)
	if err != nil {
		return result{}, err
	}
	defer b.release(t)
	var all []*receiver
	add := func(mode behaviour, n int) ([]*receiver, error) {
		var rs []*receiver
		for i := 0; i < n; i++ {
			r, err := newReceiver(mode, s.events)
			if err != nil {
				return nil, err
			}
			rs = append(rs, r)
			all = append(all, r)
		}
		return rs, nil
	}
	defer func() {
		for _, r := range all {
			r.close()
		}
	}()
	healthyRecv, err := add(healthy, s.healthy)
	if err != nil {
		return result{}, err
	}
	if _, err := add(hanging, s.hanging); err != nil {
		return result{}, err
	}
	if _, err := add(failing, s.failing); err != nil {
		return result{}, err
	}
	for ri, r := range all {
		for k := 0; k < s.subsPerRecv; k++ {
			path := fmt.Sprintf("/s/%d/%d", ri, k)
			secret, err := register(t, r.url+path, "WF-hot")
			if err != nil {
				return result{}, err
			}
			if err := r.add(path, secret); err != nil {
				return result{}, err
			}
		}
	}
	res := result{Name: s.name, Events: s.events, Fanout: len(all) * s.subsPerRecv}
	if s.cold > 0 {
		rate, err := registerMany(t, s.cold, 64)
		if err != nil {
			return result{}, err
		}
		res.Note = fmt.Sprintf("%d extra subscriptions registered at %.0f/s", s.cold, rate)
	}
	res.Expected = s.events * s.healthy * s.subsPerRecv

	pub, err := newPublisher(t.natsURL, b.bodyBytes)
	if err != nil {
		return result{}, err
	}
	defer pub.close()
	cpu0 := t.cpuSeconds()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if _, err := pub.run(ctx, s.events, s.rate, "WF-hot"); err != nil {
		return result{}, err
	}
	done := waitDrain(healthyRecv, res.Expected, 10*time.Second)
	res.Seconds = done.Sub(start).Seconds()
	cpu1 := t.cpuSeconds()

	var lat histogram
	for _, r := range healthyRecv {
		u, d := r.totals()
		res.Received += u
		res.Duplicates += d
		lat.merge(&r.lat)
	}
	for _, r := range all {
		res.BadSig += r.badSig.Load()
		res.Unexpected += r.strange.Load()
	}
	res.Lost = res.Expected - res.Received
	res.PerSecond = float64(res.Received) / res.Seconds
	res.P50ms, res.P90ms, res.P99ms = ms(lat.quantile(.5)), ms(lat.quantile(.9)), ms(lat.quantile(.99))
	res.P999ms, res.MaxMs = ms(lat.quantile(.999)), ms(lat.quantile(1))
	if t.pid != 0 && res.Received > 0 {
		res.CPUms = (cpu1 - cpu0) * 1000 / float64(res.Received)
		res.PeakRSSMiB = t.peakRSS()
	}
	res.Void, res.VoidReason = ledger(res)
	if s.restart && t.pid != 0 {
		took, err := t.restart(b.bin)
		if err != nil {
			return result{}, err
		}
		res.StartupSecs = took.Seconds()
		res.PeakRSSMiB = max(res.PeakRSSMiB, t.peakRSS())
	}
	return res, nil
}

// ledger checks published × fan-out = received unique + lost, with
// nothing received that was never sent and every signature valid.
func ledger(r result) (void bool, why string) {
	switch {
	case r.BadSig > 0:
		return true, fmt.Sprintf("%d deliveries failed signature verification", r.BadSig)
	case r.Unexpected > 0:
		return true, fmt.Sprintf("%d deliveries matched no published event", r.Unexpected)
	case r.Received > r.Expected || r.Received+r.Lost != r.Expected:
		return true, fmt.Sprintf("ledger does not balance: expected %d, received %d, lost %d", r.Expected, r.Received, r.Lost)
	}
	return false, ""
}

// waitDrain waits until the receivers hold want unique deliveries, or
// until nothing new arrived for idle; it returns when the last one came.
func waitDrain(rs []*receiver, want int, idle time.Duration) time.Time {
	last, lastN := time.Now(), -1
	for {
		n := 0
		for _, r := range rs {
			u, _ := r.totals()
			n += u
		}
		now := time.Now()
		if n >= want {
			return now
		}
		if n != lastN {
			last, lastN = now, n
		} else if now.Sub(last) > idle {
			return last
		}
		time.Sleep(5 * time.Millisecond)
	}
}
