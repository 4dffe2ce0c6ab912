// Package retry decides whether and when a failed webhook delivery is tried
// again: capped exponential backoff with jitter, bounded by age and
// optionally by attempts, honouring the receiver's Retry-After, and giving up
// at once on 410 Gone.
//
// Everything here is a pure function of its inputs (the randomness is passed
// in), so the schedule can be tested exactly and recomputed anywhere.
package retry

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Defaults applied to zero Policy fields.
const (
	DefaultInitial     = 5 * time.Second
	DefaultMaxInterval = 4 * time.Hour
	DefaultMaxAge      = 72 * time.Hour
	DefaultJitter      = 0.5
)

// Reasons a delivery is given up; they are metric label values.
const (
	ReasonMaxAttempts = "max_attempts"
	ReasonMaxAge      = "max_age"
	ReasonGone        = "gone"
)

// Policy is the retry policy. The zero value is the documented default.
type Policy struct {
	// Initial is the delay after the first failed attempt; each further
	// failure doubles it. Zero means 5s.
	Initial time.Duration
	// MaxInterval caps the delay before jitter. Zero means 4h.
	MaxInterval time.Duration
	// MaxAge bounds how long after the first attempt a retry may still be
	// scheduled. Zero means 72h.
	MaxAge time.Duration
	// MaxAttempts bounds the total number of attempts, the first included.
	// Zero means no bound other than MaxAge.
	MaxAttempts int
	// Jitter randomises each delay by up to ±Jitter of itself, so retries
	// of many deliveries that failed together do not return together.
	// Zero means 0.5; a negative value disables jitter; at most 1.
	Jitter float64
	// MaxRetryAfter caps how long a receiver's Retry-After may postpone a
	// retry. Zero means MaxInterval.
	MaxRetryAfter time.Duration
}

// Validate reports settings that make no sense; zero values are valid.
func (p Policy) Validate() error {
	var errs []error
	if p.Initial < 0 || p.MaxInterval < 0 || p.MaxAge < 0 || p.MaxRetryAfter < 0 {
		errs = append(errs, errors.New("durations must not be negative"))
	}
	if p.MaxAttempts < 0 {
		errs = append(errs, errors.New("max attempts must not be negative"))
	}
	if p.Jitter > 1 {
		errs = append(errs, fmt.Errorf("jitter %v is above 1", p.Jitter))
	}
	if n := p.withDefaults(); n.Initial > n.MaxInterval {
		errs = append(errs, fmt.Errorf("initial delay %s exceeds max interval %s", n.Initial, n.MaxInterval))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("retry policy: %w", err)
	}
	return nil
}

func (p Policy) withDefaults() Policy {
	if p.Initial <= 0 {
		p.Initial = DefaultInitial
	}
	if p.MaxInterval <= 0 {
		p.MaxInterval = DefaultMaxInterval
	}
	if p.MaxAge <= 0 {
		p.MaxAge = DefaultMaxAge
	}
	switch {
	case p.Jitter == 0:
		p.Jitter = DefaultJitter
	case p.Jitter < 0:
		p.Jitter = 0
	case p.Jitter > 1:
		p.Jitter = 1
	}
	if p.MaxRetryAfter <= 0 {
		p.MaxRetryAfter = p.MaxInterval
	}
	return p
}

// fixedClock makes backoff's elapsed-time bookkeeping deterministic; with
// MaxElapsedTime 0 it never influences the result anyway.
type fixedClock struct{}

func (fixedClock) Now() time.Time { return time.Time{} }

// maxSteps bounds the doubling loop: from 1ns, 63 doublings exceed any
// time.Duration, so the interval has saturated at MaxInterval by then.
const maxSteps = 64

// base is the un-jittered delay after failed attempt number attempt:
// Initial * 2^(attempt-1), capped at MaxInterval.
func (p Policy) base(attempt int) time.Duration {
	b := &backoff.ExponentialBackOff{
		InitialInterval:     p.Initial,
		RandomizationFactor: 0, // jitter is applied by Delay from the caller's rnd
		Multiplier:          2,
		MaxInterval:         p.MaxInterval,
		MaxElapsedTime:      0,
		Stop:                backoff.Stop,
		Clock:               fixedClock{},
	}
	b.Reset()
	d := b.NextBackOff()
	for i := 1; i < attempt && i < maxSteps && d < p.MaxInterval; i++ {
		d = b.NextBackOff()
	}
	return min(d, p.MaxInterval)
}

// Delay is the wait after failed attempt number attempt (1 = the first
// attempt; smaller values count as 1), given rnd uniform in [0,1):
//
//	base  = min(Initial * 2^(attempt-1), MaxInterval)
//	delay = base * (1 + Jitter*(2*rnd-1))
//
// so rnd 0.5 gives exactly base, and the result stays within
// [base*(1-Jitter), base*(1+Jitter)], never above MaxInterval*(1+Jitter)
// and never negative. rnd outside [0,1) is clamped.
func (p Policy) Delay(attempt int, rnd float64) time.Duration {
	p = p.withDefaults()
	base := p.base(max(attempt, 1))
	if !(rnd >= 0) { // also catches NaN
		rnd = 0
	}
	if rnd > 1 {
		rnd = 1
	}
	d := float64(base) * (1 + p.Jitter*(2*rnd-1))
	if d >= math.MaxInt64 { // only with absurd MaxInterval; avoid overflow
		return time.Duration(math.MaxInt64)
	}
	return max(time.Duration(d), 0)
}

// Outcome describes an attempt that did not succeed.
type Outcome struct {
	// Attempt is the number of the attempt that just failed, 1 for the first.
	Attempt int
	// Status is the HTTP status received, 0 when there was no response
	// (timeout, connection error, blocked destination).
	Status int
	// FirstAttempt is when the delivery was first attempted. Zero means Now.
	FirstAttempt time.Time
	// Now is the current time. Required.
	Now time.Time
	// RetryAfter is the receiver's parsed Retry-After, 0 if none.
	RetryAfter time.Duration
	// Rnd is a uniform random number in [0,1) for jitter.
	Rnd float64
}

// Decision is what to do after an Outcome.
type Decision struct {
	// Retry is true when the delivery should be attempted again after Delay.
	Retry bool
	// Delay is the wait before the next attempt when Retry is true.
	Delay time.Duration
	// Reason says why a delivery is given up: ReasonGone, ReasonMaxAttempts
	// or ReasonMaxAge. It is empty when Retry is true.
	Reason string
}

// Next decides after a failed attempt. A 2xx is a success and is not meant to
// be passed in; if it is, Next returns a zero Decision (no retry, no reason).
//
// In order: 410 Gone gives up (ReasonGone); reaching MaxAttempts gives up
// (ReasonMaxAttempts); otherwise the delay is Delay(Attempt, Rnd), raised
// to RetryAfter (capped at MaxRetryAfter) when that is longer; a retry
// that would fall after FirstAttempt+MaxAge gives up (ReasonMaxAge).
func (p Policy) Next(in Outcome) Decision {
	p = p.withDefaults()
	if in.Status >= 200 && in.Status < 300 {
		return Decision{}
	}
	if in.Status == http.StatusGone {
		return Decision{Reason: ReasonGone}
	}
	if p.MaxAttempts > 0 && in.Attempt >= p.MaxAttempts {
		return Decision{Reason: ReasonMaxAttempts}
	}
	delay := p.Delay(in.Attempt, in.Rnd)
	if in.RetryAfter > 0 {
		delay = max(delay, min(in.RetryAfter, p.MaxRetryAfter))
	}
	first := in.FirstAttempt
	if first.IsZero() {
		first = in.Now
	}
	if in.Now.Add(delay).After(first.Add(p.MaxAge)) {
		return Decision{Reason: ReasonMaxAge}
	}
	return Decision{Retry: true, Delay: delay}
}
