// Package health keeps each webhook's delivery health — its circuit state,
// its run of consecutive failures, its last success and last error — in a
// JetStream key-value bucket that every webhookd instance reads and writes,
// so a circuit opened by one instance is honoured by all of them and the
// management API answers the same through any instance.
package health

import "time"

// State is an endpoint's health as the API shows it.
type State string

const (
	// Healthy: the last attempt succeeded, or none has failed yet.
	Healthy State = "healthy"
	// Failing: the latest attempts failed, but not enough of them in a row
	// to open the circuit.
	Failing State = "failing"
	// CircuitOpen: deliveries are parked until OpenUntil, when one probe
	// attempt decides whether the circuit closes or opens again.
	CircuitOpen State = "circuit_open"
)

// Record is one webhook's shared health. The zero Record is a healthy
// webhook that has not been attempted.
type Record struct {
	WebhookID string `json:"webhookId"`
	State     State  `json:"state"`
	// ConsecutiveFailures counts failed attempts since the last success.
	ConsecutiveFailures int `json:"consecutiveFailures"`
	// FailingSince is when the current run of failures began; zero while
	// healthy. Auto-disable measures from it.
	FailingSince time.Time `json:"failingSince,omitzero"`
	// LastSuccessAt is the last 2xx, at the granularity of the flush
	// interval (a healthy endpoint is not rewritten on every success).
	LastSuccessAt time.Time `json:"lastSuccessAt,omitzero"`
	// LastFailureAt, LastErrorClass ("5xx", "timeout", "network", ...) and
	// LastStatus (0 when no HTTP answer came) describe the last failure.
	LastFailureAt  time.Time `json:"lastFailureAt,omitzero"`
	LastErrorClass string    `json:"lastErrorClass,omitempty"`
	LastStatus     int       `json:"lastStatus,omitempty"`
	// OpenUntil is when an open circuit lets a probe through; Cooldown is
	// the length of the current open period, which doubles on every failed
	// probe up to the breaker's cap.
	OpenUntil time.Time     `json:"openUntil,omitzero"`
	Cooldown  time.Duration `json:"cooldown,omitempty"`
	// UpdatedAt is when an instance last wrote the record.
	UpdatedAt time.Time `json:"updatedAt"`
}
