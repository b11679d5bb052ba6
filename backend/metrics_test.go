package backend

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestMetricLabelSetsAreCapped(t *testing.T) {
	f := newFamily("counter", "oauth_test_total", "test", "role", "outcome")
	for i := 0; i < maxLabelSets+100; i++ {
		f.inc(fmt.Sprintf("role-%d", i), "issued")
	}
	if n := len(f.series); n != maxLabelSets+1 {
		t.Fatalf("%d series, want %d and one _other", n, maxLabelSets+1)
	}
	other := f.series[otherLabel+"\x00"+otherLabel]
	if other == nil || other.count != 100 {
		t.Fatalf("_other series = %+v, want the 100 over the cap", other)
	}
}

func TestPrometheusTextFormat(t *testing.T) {
	m := newEngineMetrics()
	m.refreshes.inc("p\"1\n", "success")
	m.upstreamLatency.observe(30*time.Millisecond, "p", "token")
	m.upstreamLatency.observe(3*time.Second, "p", "token")
	text := m.prometheusText([]gauge{{name: "oauth_grants", help: "Grants.", labels: []string{"status"}, points: []gaugePoint{{values: []string{"active"}, value: 2}}}})
	for _, want := range []string{
		`oauth_refreshes_total{provider="p\"1_",outcome="success"} 1`,
		`oauth_upstream_request_duration_seconds_bucket{provider="p",endpoint="token",le="0.025"} 0`,
		`oauth_upstream_request_duration_seconds_bucket{provider="p",endpoint="token",le="0.05"} 1`,
		`oauth_upstream_request_duration_seconds_bucket{provider="p",endpoint="token",le="5"} 2`,
		`oauth_upstream_request_duration_seconds_bucket{provider="p",endpoint="token",le="+Inf"} 2`,
		`oauth_upstream_request_duration_seconds_count{provider="p",endpoint="token"} 2`,
		"# TYPE oauth_grants gauge\n",
		`oauth_grants{status="active"} 2`,
		"# TYPE oauth_sweeps_total counter\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("text lacks %q:\n%s", want, text)
		}
	}
}
