package api

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the API's Prometheus series. A nil *metrics (no Registerer)
// records nothing, so call sites need no nil checks.
type metrics struct {
	requests     *prometheus.CounterVec
	authFailures prometheus.Counter
	authLimited  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "webhookd",
			Name:      "api_requests_total",
			Help:      "Management API and operational HTTP requests, by response status class.",
		}, []string{"code"}),
		authFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "webhookd",
			Name:      "api_auth_failures_total",
			Help:      "API requests refused because the API key was missing or unknown.",
		}),
		authLimited: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "webhookd",
			Name:      "api_auth_rate_limited_total",
			Help:      "API requests with a missing or unknown key answered 429 because their client had spent its failure budget.",
		}),
	}
	// Pre-create the documented classes so rate() works from the first scrape.
	for _, c := range []string{"2xx", "4xx", "5xx"} {
		m.requests.WithLabelValues(c)
	}
	collectors := []prometheus.Collector{m.requests, m.authFailures, m.authLimited}
	for i, c := range collectors {
		if err := reg.Register(c); err != nil {
			for _, done := range collectors[:i] {
				reg.Unregister(done)
			}
			return nil, fmt.Errorf("api: register metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) request(status int) {
	if m == nil {
		return
	}
	m.requests.WithLabelValues(statusClass(status)).Inc()
}

func (m *metrics) authFailure() {
	if m == nil {
		return
	}
	m.authFailures.Inc()
}

func (m *metrics) authRateLimited() {
	if m == nil {
		return
	}
	m.authLimited.Inc()
}

// statusClass keeps the label to a handful of values whatever the status.
func statusClass(status int) string {
	switch {
	case status >= 200 && status < 300:
		return "2xx"
	case status >= 300 && status < 400:
		return "3xx"
	case status >= 400 && status < 500:
		return "4xx"
	case status >= 500 && status < 600:
		return "5xx"
	}
	return "other"
}
