package api

import (
	"context"
	"time"

	"github.com/webhookd/webhookd/registry/health"
)

// HealthSource is what the API needs of the shared endpoint health
// (health.Store provides it). It is declared here, where it is used, so
// the API depends on two methods rather than on the bucket behind them.
type HealthSource interface {
	// Health is the webhook's current record, read from memory: views call
	// it for every webhook they show. The zero Record is a healthy webhook
	// that has not been attempted.
	Health(id string) health.Record
	// Reset forgets the webhook's health on every instance; enabling a
	// webhook calls it so that the old failing-since time does not disable
	// it again at once.
	Reset(ctx context.Context, id string) error
}

// healthTimeLayout is RFC 3339 in UTC with milliseconds, always three
// digits, so that health times sort as strings and keep the precision
// the breaker works at.
const healthTimeLayout = "2006-01-02T15:04:05.000Z07:00"

// healthView is a webhook's delivery health on the wire. Only state is
// always present; every other field is omitted while zero, so a webhook
// that was never attempted shows {"state":"healthy"}.
type healthView struct {
	State               string `json:"state"`
	ConsecutiveFailures int    `json:"consecutiveFailures,omitempty"`
	LastSuccessAt       string `json:"lastSuccessAt,omitempty"`
	LastFailureAt       string `json:"lastFailureAt,omitempty"`
	LastErrorClass      string `json:"lastErrorClass,omitempty"`
	LastStatus          int    `json:"lastStatus,omitempty"`
	CircuitOpenUntil    string `json:"circuitOpenUntil,omitempty"`
}

func healthViewOf(r health.Record) healthView {
	state := r.State
	if state == "" {
		state = health.Healthy
	}
	v := healthView{
		State:               string(state),
		ConsecutiveFailures: r.ConsecutiveFailures,
		LastSuccessAt:       formatHealthTime(r.LastSuccessAt),
		LastFailureAt:       formatHealthTime(r.LastFailureAt),
		LastErrorClass:      r.LastErrorClass,
		LastStatus:          r.LastStatus,
	}
	if state == health.CircuitOpen {
		// OpenUntil of a closed circuit is history, not a promise.
		v.CircuitOpenUntil = formatHealthTime(r.OpenUntil)
	}
	return v
}

// formatHealthTime is "" for the zero time, so the field is omitted.
func formatHealthTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Truncate(time.Millisecond).Format(healthTimeLayout)
}

// healthOf is the webhook's record, or the zero (healthy) one without a
// HealthSource.
func (s *Server) healthOf(id string) health.Record {
	if s.health == nil {
		return health.Record{}
	}
	return s.health.Health(id)
}
