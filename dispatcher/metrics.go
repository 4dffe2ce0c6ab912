package dispatcher

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/webhookd/webhookd/events"
)

// metrics are the dispatcher's Prometheus series. Labels are deliberately
// low-cardinality: event type, outcome, status class, reason — never a URL,
// a workspace or an id.
type metrics struct {
	eventsReceived  *prometheus.CounterVec
	eventsRejected  *prometheus.CounterVec
	jobsCreated     *prometheus.CounterVec
	attempts        *prometheus.CounterVec
	attemptDuration *prometheus.HistogramVec
	latency         *prometheus.HistogramVec
	failed          *prometheus.CounterVec
	dropped         *prometheus.CounterVec
	deferred        prometheus.Counter
	inflight        prometheus.Gauge
	pendingRetry    prometheus.Gauge
	backlog         prometheus.Gauge
	circuitsOpen    prometheus.Gauge
	transitions     *prometheus.CounterVec
	parked          *prometheus.CounterVec
	autoDisabled    *prometheus.CounterVec
	probation       prometheus.Gauge
	fresh           prometheus.Gauge
	syncWait        prometheus.Histogram
	syncFailed      prometheus.Counter
	fanoutPaused    prometheus.Gauge
	direct          prometheus.Counter
	directStored    *prometheus.CounterVec
	stalled         *prometheus.CounterVec
	slowMoved       prometheus.Counter // stalled{action="moved"}
	stalledShed     prometheus.Counter // stalled{action="shed"}
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns = "webhookd"
	m := &metrics{
		eventsReceived: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns,
			Name: "events_received_total", Help: "Valid events taken from the events stream, by event type."},
			[]string{"event_type"}),
		eventsRejected: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns,
			Name: "events_rejected_total", Help: "Malformed events terminated without delivery, by reason."},
			[]string{"reason"}),
		jobsCreated: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns,
			Name: "delivery_jobs_created_total", Help: "Deliveries created by fan-out (one per event and matching subscription), whether stored as a job or made direct."},
			[]string{"event_type"}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns,
			Name: "delivery_attempts_total", Help: "HTTP delivery attempts, by event type, outcome and status class."},
			[]string{"event_type", "outcome", "status_class"}),
		attemptDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns,
			Name: "delivery_attempt_duration_seconds", Help: "Duration of one HTTP delivery attempt.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 15, 30}},
			[]string{"outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns,
			Name: "delivery_latency_seconds", Help: "Time from an event entering the events stream to its subscriber answering 2xx, retries included.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5, 30, 60, 300, 1800, 3600, 21600, 86400}},
			[]string{"event_type"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns,
			Name: "deliveries_failed_total", Help: "Deliveries given up and recorded as failed, by event type and reason (max_attempts, max_age, gone, disabled, too_large, max_deliveries)."},
			[]string{"event_type", "reason"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns,
			Name: "deliveries_dropped_total", Help: "Delivery jobs dropped without an attempt, by reason (webhook_deleted, invalid_job)."},
			[]string{"reason"}),
		deferred: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns,
			Name: "deliveries_deferred_total", Help: "Delivery jobs set aside in JetStream for a few seconds because their destination host was at its concurrency and queue limit (not an attempt)."}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns,
			Name: "deliveries_inflight", Help: "HTTP delivery attempts in progress in this process."}),
		pendingRetry: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns,
			Name: "deliveries_pending_retry", Help: "Deliveries waiting in JetStream for their next retry (stream-wide, sampled)."}),
		backlog: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns,
			Name: "deliveries_backlog", Help: "Delivery jobs due but not yet taken by any instance (stream-wide, sampled)."}),
	}
	m.circuitsOpen = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns,
		Name: "circuits_open", Help: "Webhooks whose circuit is open or half-open, as this instance sees them (shared state; aggregate with max())."})
	m.transitions = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns,
		Name: "breaker_transitions_total", Help: "Circuit breaker state changes, by the state entered (open, half_open, closed)."},
		[]string{"to"})
	m.parked = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns,
		Name: "deliveries_parked_total", Help: "Delivery jobs parked in JetStream until their webhook's circuit half-opens, by stage (fanout, delivery)."},
		[]string{"stage"})
	m.autoDisabled = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns,
		Name: "webhooks_auto_disabled_total", Help: "Webhooks disabled automatically, by reason (failing: no success for --disable-after; gone: 410 Gone)."},
		[]string{"reason"})
	m.probation = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns,
		Name: "deliveries_probation_inflight", Help: "HTTP attempts in progress in the probation pool (new or failing destinations, probes)."})
	m.fresh = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns,
		Name: "deliveries_fresh_inflight", Help: "HTTP attempts in progress to hosts not tried yet (the fresh pool)."})
	m.syncWait = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns,
		Name: "fanout_registry_sync_seconds", Help: "Time fan-out waited, per fetched batch of events, for the shared registry to be applied up to its latest revision (the read-your-writes barrier).",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}})
	m.syncFailed = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns,
		Name: "fanout_registry_sync_failures_total", Help: "Batches of events handed back unmatched because the shared registry could not be confirmed current in time (they are fanned out again shortly, here or elsewhere)."})
	m.fanoutPaused = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns,
		Name: "fanout_paused", Help: "1 while this instance's fan-out is paused because the deliveries stream is nearly full (events wait in the events stream)."})
	for _, to := range []string{"open", "half_open", "closed"} {
		m.transitions.WithLabelValues(to)
	}
	m.direct = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns,
		Name: "deliveries_direct_total", Help: "Deliveries whose first attempt fan-out handed straight to its lane, with no job stored (healthy webhooks on quick hosts)."})
	m.directStored = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns,
		Name: "deliveries_direct_stored_total", Help: "Direct deliveries that had to be stored after all, by reason: queued (still waiting in its lane at the deadline), attempting (attempt past the deadline: a continuation), handed_back."},
		[]string{"reason"})
	m.stalled = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns,
		Name: "deliveries_stalled_total", Help: "Work taken from hosts that stopped answering before their attempts time out, by action: moved (an attempt unanswered after SlowAfter left the healthy pool for the slow one), shed (a job queued for a stalled host was set aside)."},
		[]string{"action"})
	m.slowMoved, m.stalledShed = m.stalled.WithLabelValues("moved"), m.stalled.WithLabelValues("shed")
	for _, st := range []string{"fanout", "delivery"} {
		m.parked.WithLabelValues(st)
	}
	for _, r := range []string{"queued", "attempting", "handed_back"} {
		m.directStored.WithLabelValues(r)
	}
	for _, r := range []string{"failing", "gone"} {
		m.autoDisabled.WithLabelValues(r)
	}
	// Every label combination exists from the start, so dashboards and
	// alert expressions see zeros rather than absent series.
	for _, t := range events.Types {
		et := string(t)
		m.eventsReceived.WithLabelValues(et)
		m.jobsCreated.WithLabelValues(et)
		m.latency.WithLabelValues(et)
		m.attempts.WithLabelValues(et, "success", "2xx")
		for _, class := range []string{"3xx", "4xx", "5xx", "timeout", "network", "blocked"} {
			m.attempts.WithLabelValues(et, "error", class)
		}
		for _, reason := range []string{"max_attempts", "max_age", "gone", "disabled", reasonTooLarge, reasonMaxDeliveries} {
			m.failed.WithLabelValues(et, reason)
		}
	}
	for _, r := range events.Reasons {
		m.eventsRejected.WithLabelValues(string(r))
	}
	for _, o := range []string{"success", "error"} {
		m.attemptDuration.WithLabelValues(o)
	}
	for _, r := range []string{"webhook_deleted", "invalid_job"} {
		m.dropped.WithLabelValues(r)
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.eventsReceived, m.eventsRejected, m.jobsCreated, m.attempts,
		m.attemptDuration, m.latency, m.failed, m.dropped, m.deferred, m.inflight, m.pendingRetry, m.backlog,
		m.circuitsOpen, m.transitions, m.parked, m.autoDisabled, m.probation, m.fresh, m.syncWait, m.syncFailed, m.fanoutPaused,
		m.direct, m.directStored, m.stalled} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("dispatcher: register metrics: %w", err)
		}
	}
	return m, nil
}

// statusClass maps an attempt's result to the status_class label.
func statusClass(status int, kind errKind) string {
	switch {
	case kind == errBlocked:
		return "blocked"
	case kind == errTimeout:
		return "timeout"
	case kind == errNetwork:
		return "network"
	case status >= 200 && status < 300:
		return "2xx"
	case status >= 300 && status < 400:
		return "3xx"
	case status >= 400 && status < 500:
		return "4xx"
	default:
		return "5xx"
	}
}
