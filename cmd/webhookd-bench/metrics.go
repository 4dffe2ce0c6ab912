package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The daemon's Prometheus series the bench reads from /metrics (served
// on the API address, unauthenticated).
const (
	metricGoroutines    = "go_goroutines"
	metricRegistrations = "webhookd_registrations"
	metricStoreBytes    = "webhookd_store_bytes"
	metricStoreLimit    = "webhookd_store_limit_bytes"
	metricFailed        = "webhookd_deliveries_failed_total"
)

// metricSample is one line of the text exposition format.
type metricSample struct {
	Name   string
	Labels map[string]string
	Value  float64
}

// metricSet is one scrape.
type metricSet []metricSample

var errMetricFormat = errors.New("unexpected metrics format")

// parseMetrics reads the Prometheus text exposition format: comments and
// blank lines are skipped, every other line is name{labels} value
// [timestamp]. Label values may hold escaped quotes, backslashes and
// newlines.
func parseMetrics(r io.Reader) (metricSet, error) {
	var out metricSet
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		s, err := parseMetricLine(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		out = append(out, s)
	}
	return out, sc.Err()
}

func parseMetricLine(line string) (metricSample, error) {
	s := metricSample{Labels: map[string]string{}}
	i := strings.IndexAny(line, "{ \t")
	if i <= 0 {
		return s, fmt.Errorf("%w: %q", errMetricFormat, line)
	}
	s.Name, line = line[:i], line[i:]
	if line[0] == '{' {
		rest, err := parseLabels(line[1:], s.Labels)
		if err != nil {
			return s, fmt.Errorf("%w: %s: %w", errMetricFormat, s.Name, err)
		}
		line = rest
	}
	f := strings.Fields(line)
	if len(f) < 1 || len(f) > 2 {
		return s, fmt.Errorf("%w: %s: no value", errMetricFormat, s.Name)
	}
	v, err := strconv.ParseFloat(f[0], 64) // also "NaN", "+Inf"
	if err != nil {
		return s, fmt.Errorf("%w: %s: value %q", errMetricFormat, s.Name, f[0])
	}
	s.Value = v
	return s, nil
}

// parseLabels reads `a="x",b="y"}` into into and returns what follows '}'.
func parseLabels(s string, into map[string]string) (string, error) {
	for {
		s = strings.TrimLeft(s, " ,")
		if strings.HasPrefix(s, "}") {
			return s[1:], nil
		}
		eq := strings.Index(s, `="`)
		if eq <= 0 {
			return "", errors.New("bad label")
		}
		name := strings.TrimSpace(s[:eq])
		s = s[eq+2:]
		var v strings.Builder
		closed := false
		for j := 0; j < len(s); j++ {
			c := s[j]
			switch {
			case c == '\\' && j+1 < len(s):
				j++
				if s[j] == 'n' {
					v.WriteByte('\n')
				} else {
					v.WriteByte(s[j])
				}
			case c == '"':
				s, closed = s[j+1:], true
			default:
				v.WriteByte(c)
			}
			if closed {
				break
			}
		}
		if !closed {
			return "", errors.New("unterminated label value")
		}
		into[name] = v.String()
	}
}

// matches reports whether s carries every label of want.
func (s metricSample) matches(name string, want map[string]string) bool {
	if s.Name != name {
		return false
	}
	for k, v := range want {
		if s.Labels[k] != v {
			return false
		}
	}
	return true
}

// get is the first sample of name carrying the labels of want.
func (m metricSet) get(name string, want map[string]string) (float64, bool) {
	for _, s := range m {
		if s.matches(name, want) {
			return s.Value, true
		}
	}
	return 0, false
}

// sum adds every sample of name carrying the labels of want; ok is false
// when there is none.
func (m metricSet) sum(name string, want map[string]string) (total float64, ok bool) {
	for _, s := range m {
		if s.matches(name, want) && !math.IsNaN(s.Value) {
			total += s.Value
			ok = true
		}
	}
	return total, ok
}

// byLabel maps each value of label among name's samples to its value
// (summed where several samples share it).
func (m metricSet) byLabel(name, label string) map[string]float64 {
	out := map[string]float64{}
	for _, s := range m {
		if s.Name == name {
			out[s.Labels[label]] += s.Value
		}
	}
	return out
}

// optMetric is m's value of name, nil when the series is absent (or the
// scrape failed: m is nil then).
func (m metricSet) opt(name string) *float64 {
	if v, ok := m.get(name, nil); ok {
		return &v
	}
	return nil
}

var metricsClient = &http.Client{Timeout: 10 * time.Second}

// scrapeMetrics reads the daemon's /metrics.
func scrapeMetrics(ctx context.Context, api string) (metricSet, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, api+"/metrics", nil)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	resp, err := metricsClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil, fmt.Errorf("metrics: GET /metrics: %s", resp.Status)
	}
	m, err := parseMetrics(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return m, nil
}

// streamBytes is a stream's stored bytes and its bound, from
// webhookd_store_bytes and webhookd_store_limit_bytes.
type streamBytes struct {
	Stream   string  `json:"stream"`
	MiB      float64 `json:"mib"`
	PeakMiB  float64 `json:"peakMib"` // the largest sampled
	LimitMiB float64 `json:"limitMib"`
	Policy   string  `json:"policy,omitempty"`
}

// storeSizes lists every stream's size in m, sorted by name.
func storeSizes(m metricSet) []streamBytes {
	var out []streamBytes
	for _, s := range m {
		if s.Name != metricStoreBytes {
			continue
		}
		st := streamBytes{Stream: s.Labels["stream"], MiB: s.Value / (1 << 20)}
		st.PeakMiB = st.MiB
		for _, l := range m {
			if l.Name == metricStoreLimit && l.Labels["stream"] == st.Stream {
				st.LimitMiB, st.Policy = l.Value/(1<<20), l.Labels["policy"]
			}
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b streamBytes) int { return strings.Compare(a.Stream, b.Stream) })
	return out
}

// raisePeaks lifts each stream's PeakMiB in into to its peak in now,
// adding the streams into lacks.
func raisePeaks(into []streamBytes, now []streamBytes) []streamBytes {
	for _, n := range now {
		found := false
		for i := range into {
			if into[i].Stream == n.Stream {
				into[i].PeakMiB = max(into[i].PeakMiB, n.PeakMiB)
				found = true
			}
		}
		if !found {
			into = append(into, n)
		}
	}
	return into
}

// storeLine prints the streams as "NAME x MiB (peak y, bound z)",
// leaving out key-value buckets that stayed empty.
func storeLine(ss []streamBytes) string {
	if len(ss) == 0 {
		return "not readable"
	}
	var parts []string
	for _, s := range ss {
		if strings.HasPrefix(s.Stream, "KV_") && s.PeakMiB == 0 {
			continue
		}
		bound := "no bound"
		if s.LimitMiB > 0 {
			bound = fmt.Sprintf("bound %.0f MiB %s", s.LimitMiB, s.Policy)
		}
		parts = append(parts, fmt.Sprintf("%s %.1f MiB (peak %.1f, %s)", s.Stream, s.MiB, s.PeakMiB, bound))
	}
	return strings.Join(parts, ", ")
}
