package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"
)

// stateCircuitOpen is the API's health.state of a webhook whose circuit
// is open (registry/api/webhookhealth.go).
const stateCircuitOpen = "circuit_open"

// apiHealth is the part of GET /api/webhook/{id}'s health view the bench
// reads.
type apiHealth struct {
	State               string `json:"state"`
	ConsecutiveFailures int    `json:"consecutiveFailures"`
	LastFailureAt       string `json:"lastFailureAt"`
	CircuitOpenUntil    string `json:"circuitOpenUntil"`
}

// hostCircuit is one revived host's circuit as the API showed it right
// before the revival.
type hostCircuit struct {
	Host                int    `json:"host"` // index among the dead hosts
	State               string `json:"state"`
	ConsecutiveFailures int    `json:"consecutiveFailures"`
	LastFailureAt       string `json:"lastFailureAt,omitempty"`
	CircuitOpenUntil    string `json:"circuitOpenUntil,omitempty"`
	// CooldownSeconds is open-until − last failure: the cool-down the
	// last failed attempt or probe started; RemainingSeconds is
	// open-until − the moment it was read.
	CooldownSeconds  *float64 `json:"cooldownSeconds,omitempty"`
	RemainingSeconds *float64 `json:"remainingSeconds,omitempty"`
	Error            string   `json:"error,omitempty"`
}

// hostCircuitOf derives the cool-down figures from a health view read at
// readAt. Unparseable times leave them nil.
func hostCircuitOf(host int, h apiHealth, readAt time.Time) hostCircuit {
	c := hostCircuit{Host: host, State: h.State, ConsecutiveFailures: h.ConsecutiveFailures,
		LastFailureAt: h.LastFailureAt, CircuitOpenUntil: h.CircuitOpenUntil}
	until, err := time.Parse(time.RFC3339Nano, h.CircuitOpenUntil)
	if h.CircuitOpenUntil == "" || err != nil {
		return c
	}
	rem := until.Sub(readAt).Seconds()
	c.RemainingSeconds = &rem
	if last, err := time.Parse(time.RFC3339Nano, h.LastFailureAt); h.LastFailureAt != "" && err == nil {
		cd := until.Sub(last).Seconds()
		c.CooldownSeconds = &cd
	}
	return c
}

// circuitsAtRevival summarises the revived hosts' circuits.
type circuitsAtRevival struct {
	Hosts           int            `json:"hosts"`
	Open            int            `json:"open"`
	States          map[string]int `json:"states"`
	Errors          int            `json:"errors"`
	CooldownMedian  *float64       `json:"cooldownMedianSeconds"`
	CooldownMax     *float64       `json:"cooldownMaxSeconds"`
	RemainingMedian *float64       `json:"remainingMedianSeconds"`
	RemainingMax    *float64       `json:"remainingMaxSeconds"`
	ReadMillis      float64        `json:"readMs"` // how long reading them all took
	PerHost         []hostCircuit  `json:"perHost"`
}

func summariseCircuits(hs []hostCircuit) *circuitsAtRevival {
	c := &circuitsAtRevival{Hosts: len(hs), States: map[string]int{}, PerHost: hs}
	var cds, rems []float64
	for _, h := range hs {
		if h.Error != "" {
			c.Errors++
			continue
		}
		c.States[h.State]++
		if h.State == stateCircuitOpen {
			c.Open++
		}
		if h.CooldownSeconds != nil {
			cds = append(cds, *h.CooldownSeconds)
		}
		if h.RemainingSeconds != nil {
			rems = append(rems, *h.RemainingSeconds)
		}
	}
	c.CooldownMedian, c.CooldownMax = medianMax(cds)
	c.RemainingMedian, c.RemainingMax = medianMax(rems)
	return c
}

// cooldown is host's cool-down at revival, if it was read.
func (c *circuitsAtRevival) cooldown(host int) (float64, bool) {
	if c == nil {
		return 0, false
	}
	for _, h := range c.PerHost {
		if h.Host == host && h.CooldownSeconds != nil {
			return *h.CooldownSeconds, true
		}
	}
	return 0, false
}

// medianMax is nil, nil for no values.
func medianMax(xs []float64) (*float64, *float64) {
	if len(xs) == 0 {
		return nil, nil
	}
	m, x := median(xs), slices.Max(xs)
	return &m, &x
}

func (c *circuitsAtRevival) line() string {
	states := make([]string, 0, len(c.States))
	for _, k := range slices.Sorted(maps.Keys(c.States)) {
		states = append(states, fmt.Sprintf("%d %s", c.States[k], k))
	}
	s := fmt.Sprintf("circuits at revival (GET /api/webhook/{id} health, just before the hosts came back): %d/%d open (%s); "+
		"cool-down in force (circuitOpenUntil − lastFailureAt) median %s, max %s; still to run median %s, max %s",
		c.Open, c.Hosts, strings.Join(states, ", "), opt(c.CooldownMedian, "%.1f s"), opt(c.CooldownMax, "%.1f s"),
		opt(c.RemainingMedian, "%.1f s"), opt(c.RemainingMax, "%.1f s"))
	if c.Errors > 0 {
		s += fmt.Sprintf("; %d not readable", c.Errors)
	}
	return s
}

// readCircuits reads the health of the dead hosts' webhooks whose
// indexes are given.
func (r *scenarioRun) readCircuits(ctx context.Context, hosts []int) *circuitsAtRevival {
	out := make([]hostCircuit, len(hosts))
	var mu sync.Mutex
	start := time.Now()
	_ = parallel(ctx, len(hosts), 8, func(ctx context.Context, j int) error {
		i := hosts[j]
		var env struct {
			Data struct {
				Health apiHealth `json:"health"`
			} `json:"data"`
		}
		hc := hostCircuit{Host: i}
		sub := r.dead.base + i
		if sub >= len(r.hookIDs) || r.hookIDs[sub] == "" {
			hc.Error = "no webhook id"
		} else if err := r.api.do(ctx, "GET", "/api/webhook/"+r.hookIDs[sub], nil, &env); err != nil {
			hc.Error = err.Error()
		} else {
			hc = hostCircuitOf(i, env.Data.Health, time.Now())
		}
		mu.Lock()
		out[j] = hc
		mu.Unlock()
		return nil
	})
	c := summariseCircuits(out)
	c.ReadMillis = float64(time.Since(start)) / float64(time.Millisecond)
	return c
}
