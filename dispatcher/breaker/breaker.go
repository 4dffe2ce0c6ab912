// Package breaker is a circuit breaker per delivery destination.
//
// A circuit starts closed. A run of consecutive failed attempts — or a
// shorter run of timeouts, which are the failures that hold a worker and a
// connection for the whole delivery timeout — opens it for a cool-down.
// While it is open, Allow refuses every attempt and tells the caller when to
// come back. Once the cool-down has passed the circuit is half-open: Allow
// lets Probes attempts through and refuses the rest. A successful probe
// closes the circuit; a failed one opens it again for twice the previous
// cool-down, up to MaxCooldown.
//
// The breaker keeps no goroutines and reads time only through Config.Now,
// so its state machine is tested with an injected clock.
package breaker

import (
	"errors"
	"sync"
	"time"
)

// State is a circuit's state.
type State uint8

const (
	Closed State = iota
	Open
	HalfOpen
)

func (s State) String() string {
	switch s {
	case Open:
		return "open"
	case HalfOpen:
		return "half_open"
	default:
		return "closed"
	}
}

// Result is how one attempt ended.
type Result uint8

const (
	Success Result = iota
	Failure        // an HTTP answer other than 2xx, or a connection error
	Timeout        // no answer within the delivery timeout
)

// Config tunes a Breaker. The zero value of each field picks its default.
type Config struct {
	// FailureThreshold is how many failed attempts in a row open a circuit.
	// Zero means 5.
	FailureThreshold int
	// TimeoutThreshold is how many timed-out attempts in a row open a
	// circuit; a hanging receiver costs a full delivery timeout per
	// attempt, so it is cut off sooner. Zero means 2.
	TimeoutThreshold int
	// Cooldown is how long a circuit first stays open. Zero means 5s.
	Cooldown time.Duration
	// MaxCooldown caps the cool-down as failed probes double it. Zero
	// means 5m.
	MaxCooldown time.Duration
	// Probes is how many attempts a half-open circuit lets through at once.
	// Zero means 1.
	Probes int
	// ProbeTimeout is how long a granted probe may stay unreported before
	// the half-open circuit grants another: a probe whose job was handed
	// elsewhere must not keep the circuit half-open for ever. Zero means 1m.
	ProbeTimeout time.Duration
	// Now is the clock. Nil means time.Now.
	Now func() time.Time
}

func (c *Config) setDefaults() error {
	if c.FailureThreshold < 0 || c.TimeoutThreshold < 0 || c.Cooldown < 0 || c.MaxCooldown < 0 || c.Probes < 0 || c.ProbeTimeout < 0 {
		return errors.New("breaker: thresholds, cool-downs and probes must not be negative")
	}
	if c.FailureThreshold == 0 {
		c.FailureThreshold = 5
	}
	if c.TimeoutThreshold == 0 {
		c.TimeoutThreshold = 2
	}
	if c.Cooldown == 0 {
		c.Cooldown = 5 * time.Second
	}
	if c.MaxCooldown == 0 {
		c.MaxCooldown = 5 * time.Minute
	}
	if c.MaxCooldown < c.Cooldown {
		return errors.New("breaker: MaxCooldown must not be shorter than Cooldown")
	}
	if c.Probes == 0 {
		c.Probes = 1
	}
	if c.ProbeTimeout == 0 {
		c.ProbeTimeout = time.Minute
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// Breaker holds one circuit per key (webhookd keys them by webhook id).
// Keys with a closed circuit and no failures take no memory. It is safe for
// concurrent use.
type Breaker struct {
	cfg Config
	mu  sync.Mutex
	m   map[string]*circuit
}

// circuit is one key's state. A key is in the map only while it has
// failures or a non-closed circuit.
type circuit struct {
	state     State
	failures  int // consecutive failed attempts
	timeouts  int // consecutive timed-out attempts
	cooldown  time.Duration
	openUntil time.Time
	probing   int       // probes in flight while half-open
	probeAt   time.Time // when the last probe was granted
}

// New validates cfg and returns a Breaker with every circuit closed.
func New(cfg Config) (*Breaker, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	return &Breaker{cfg: cfg, m: make(map[string]*circuit)}, nil
}

// Decision is Allow's answer.
type Decision struct {
	// Allowed: make the attempt. Report its result with Record, passing
	// Probe back.
	Allowed bool
	// Probe: the attempt is a half-open circuit's probe.
	Probe bool
	// RetryAt: when refused, the earliest time worth asking again.
	RetryAt time.Time
	// HalfOpened: this call moved the circuit from open to half-open.
	HalfOpened bool
}

// Allow decides whether an attempt for key may go ahead now.
func (b *Breaker) Allow(key string) Decision {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.m[key]
	if c == nil || c.state == Closed {
		return Decision{Allowed: true}
	}
	now := b.cfg.Now()
	halfOpened := false
	if c.state == Open {
		if now.Before(c.openUntil) {
			return Decision{RetryAt: c.openUntil}
		}
		c.state = HalfOpen
		c.probing = 0
		halfOpened = true
	}
	if c.probing >= b.cfg.Probes && now.Sub(c.probeAt) > b.cfg.ProbeTimeout {
		c.probing = 0 // the probes granted never reported
	}
	if c.probing < b.cfg.Probes {
		c.probing++
		c.probeAt = now
		return Decision{Allowed: true, Probe: true, HalfOpened: halfOpened}
	}
	// Come back after the probe has had time to end (one cool-down).
	return Decision{RetryAt: now.Add(c.cooldown)}
}

// Transition reports a state change made by Record, Adopt or Reset.
type Transition struct {
	Changed  bool
	From, To State
}

// Record reports the result of an attempt that Allow permitted. It returns
// the transition it caused, if any.
func (b *Breaker) Record(key string, probe bool, r Result) Transition {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.m[key]
	if r == Success {
		if c == nil {
			return Transition{}
		}
		delete(b.m, key)
		return Transition{Changed: c.state != Closed, From: c.state, To: Closed}
	}
	if c == nil {
		c = &circuit{}
		b.m[key] = c
	}
	c.failures++
	if r == Timeout {
		c.timeouts++
	} else {
		c.timeouts = 0
	}
	from := c.state
	switch {
	case c.state == HalfOpen && probe:
		c.probing = max(c.probing-1, 0)
		b.open(c, min(2*c.cooldown, b.cfg.MaxCooldown))
	case c.state == Closed && (c.failures >= b.cfg.FailureThreshold || c.timeouts >= b.cfg.TimeoutThreshold):
		b.open(c, b.cfg.Cooldown)
	}
	// Attempts that were already in flight when the circuit opened change
	// nothing but the counts.
	return Transition{Changed: c.state != from, From: from, To: c.state}
}

func (b *Breaker) open(c *circuit, cooldown time.Duration) {
	c.state = Open
	c.cooldown = cooldown
	c.openUntil = b.cfg.Now().Add(cooldown)
	c.probing = 0
}

// Abandon gives back a probe slot whose attempt never ran (the job was
// handed back before it reached the network).
func (b *Breaker) Abandon(key string, probe bool) {
	if !probe {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if c := b.m[key]; c != nil && c.state == HalfOpen {
		c.probing = max(c.probing-1, 0)
	}
}

// Adopt takes over a circuit opened elsewhere (another instance): the key's
// circuit is open until `until` with the given cool-down, unless this
// breaker already holds it open for longer. A time in the past changes
// nothing.
func (b *Breaker) Adopt(key string, until time.Time, cooldown time.Duration, failures int) Transition {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !until.After(b.cfg.Now()) {
		return Transition{}
	}
	c := b.m[key]
	if c == nil {
		c = &circuit{}
		b.m[key] = c
	}
	from := c.state
	if c.state == Open && !c.openUntil.Before(until) {
		return Transition{}
	}
	c.state, c.openUntil, c.probing = Open, until, 0
	c.cooldown = min(max(cooldown, b.cfg.Cooldown), b.cfg.MaxCooldown)
	c.failures = max(c.failures, failures)
	return Transition{Changed: from != Open, From: from, To: Open}
}

// Reset closes key's circuit and forgets its failures: the webhook was
// re-enabled, deleted, or another instance saw it succeed.
func (b *Breaker) Reset(key string) Transition {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.m[key]
	if c == nil {
		return Transition{}
	}
	delete(b.m, key)
	return Transition{Changed: c.state != Closed, From: c.state, To: Closed}
}

// Status is a snapshot of one circuit.
type Status struct {
	State     State
	Failures  int
	OpenUntil time.Time
	Cooldown  time.Duration
}

// Status returns key's circuit. A key never seen is closed with no
// failures.
func (b *Breaker) Status(key string) Status {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.m[key]
	if c == nil {
		return Status{}
	}
	return Status{State: c.state, Failures: c.failures, OpenUntil: c.openUntil, Cooldown: c.cooldown}
}

// Keys returns the keys the breaker holds state for: those with failures
// or a circuit that is not closed.
func (b *Breaker) Keys() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	keys := make([]string, 0, len(b.m))
	for k := range b.m {
		keys = append(keys, k)
	}
	return keys
}

// OpenCount returns how many circuits are open or half-open.
func (b *Breaker) OpenCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, c := range b.m {
		if c.state != Closed {
			n++
		}
	}
	return n
}
