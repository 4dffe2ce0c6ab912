// Package deploy_test checks that deploy/'s alerts and dashboard only use
// metric families webhookd exports (listed in metrics.txt, which
// cmd/webhookd's tests check against a live /metrics).
package deploy_test

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
)

var metricRe = regexp.MustCompile(`webhookd_[a-z_]+`)

func known(t *testing.T) map[string]bool {
	t.Helper()
	raw, err := os.ReadFile("metrics.txt")
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]bool{}
	for _, l := range strings.Split(string(raw), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			m[l] = true
		}
	}
	return m
}

func family(name string) string {
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		name = strings.TrimSuffix(name, suf)
	}
	return name
}

func checkNames(t *testing.T, file, text string, known map[string]bool) int {
	t.Helper()
	n := 0
	for _, name := range metricRe.FindAllString(text, -1) {
		n++
		if !known[family(name)] {
			t.Errorf("%s uses %s, which webhookd does not export", file, name)
		}
	}
	return n
}

func TestAlertsUseExportedMetrics(t *testing.T) {
	raw, err := os.ReadFile("prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	// Each "expr:" line, plus the lines of an "expr: |" block (those
	// indented deeper than the "expr:" key).
	var exprs []string
	block := -1
	for _, l := range strings.Split(string(raw), "\n") {
		s := strings.TrimSpace(l)
		indent := len(l) - len(strings.TrimLeft(l, " "))
		if block >= 0 && (s == "" || indent > block) {
			exprs = append(exprs, s)
			continue
		}
		block = -1
		if strings.HasPrefix(s, "expr:") {
			exprs = append(exprs, s)
			if v := strings.TrimSpace(strings.TrimPrefix(s, "expr:")); strings.HasPrefix(v, "|") || strings.HasPrefix(v, ">") {
				block = indent
			}
		}
	}
	if checkNames(t, "alerts.yml", strings.Join(exprs, "\n"), known(t)) == 0 {
		t.Error("no metric names found in alert expressions")
	}
}

func TestDashboard(t *testing.T) {
	raw, err := os.ReadFile("grafana/webhookd.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Title  string
		Panels []struct {
			ID      int
			Type    string
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("dashboard is not valid JSON: %v", err)
	}
	if d.Title == "" || len(d.Panels) < 10 {
		t.Fatalf("dashboard has title %q and %d panels", d.Title, len(d.Panels))
	}
	k := known(t)
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel %q reuses id %d", p.Title, p.ID)
		}
		ids[p.ID] = true
		if p.Type == "row" { // a row header: a title, no queries
			if p.Title == "" {
				t.Errorf("row %d has no title", p.ID)
			}
			continue
		}
		if p.Title == "" || len(p.Targets) == 0 {
			t.Errorf("panel %q has no title or no targets", p.Title)
		}
		for _, tg := range p.Targets {
			if checkNames(t, "webhookd.json panel "+p.Title, tg.Expr, k) == 0 {
				t.Errorf("panel %q target %q names no webhookd metric", p.Title, tg.Expr)
			}
		}
	}
}

// TestEveryAlertHasAUnitTest: each alert in alerts.yml is evaluated by at
// least one alert_rule_test in alerts_test.yml (which promtool runs, see
// check.sh), so none ships untested.
func TestEveryAlertHasAUnitTest(t *testing.T) {
	rules, err := os.ReadFile("prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile("prometheus/alerts_test.yml")
	if err != nil {
		t.Fatal(err)
	}
	tested := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s*alertname:\s*(\S+)`).FindAllStringSubmatch(string(tests), -1) {
		tested[m[1]] = true
	}
	alerts := regexp.MustCompile(`(?m)^\s*- alert:\s*(\S+)`).FindAllStringSubmatch(string(rules), -1)
	if len(alerts) == 0 {
		t.Fatal("no alerts found in alerts.yml")
	}
	for _, m := range alerts {
		if !tested[m[1]] {
			t.Errorf("alert %s has no alert_rule_test in alerts_test.yml", m[1])
		}
	}
}
