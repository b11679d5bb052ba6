package backend

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
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

// Rotations are logged at most once a minute per grant, counted; another
// event of the grant logs the rotations not yet logged first.
func TestRotationEventsAreAggregated(t *testing.T) {
	env := newTestEnv(t)
	env.mustWrite("grants/g", map[string]any{"provider": "up", "refresh_token": env.up.mint("read")})
	env.mustWrite("roles/r", map[string]any{"grant": "g"})
	rotatedLogged := func() float64 {
		f := env.b.metrics.lifecycleEvents
		f.mu.Lock()
		defer f.mu.Unlock()
		if s := f.series[eventRotated]; s != nil {
			return s.count
		}
		return 0
	}
	for i := 0; i < 5; i++ {
		if _, err := env.creds("r"); err != nil {
			t.Fatal(err)
		}
	}
	if got := rotatedLogged(); got != 1 {
		t.Fatalf("after 5 rotations in a second: %v counted as logged, want the first alone", got)
	}
	if n := env.b.events.takePending("g", false); n != 4 {
		t.Fatalf("pending rotations = %d, want 4", n)
	}
	env.clock.Advance(rotationLogEvery)
	if _, err := env.creds("r"); err != nil {
		t.Fatal(err)
	}
	if got := rotatedLogged(); got != 2 {
		t.Fatalf("a minute later: %v logged, want 2", got)
	}
	if _, err := env.creds("r"); err != nil { // pending again
		t.Fatal(err)
	}
	if _, err := env.do(logical.DeleteOperation, "grants/g", map[string]any{"force": true}); err != nil {
		t.Fatal(err)
	}
	if got := rotatedLogged(); got != 3 {
		t.Fatalf("after the grant was erased: %v logged, want its pending rotation too (3)", got)
	}
	env.mustWrite("grants/g", map[string]any{"provider": "up", "refresh_token": env.up.mint("read")})
	if got := rotatedLogged(); got != 3 {
		t.Fatalf("a new grant of the same name inherited rotations: %v", got)
	}
}
