package backend

import (
	"context"
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestGrafanaDashboardMatchesTheMetrics: every query of the dashboard in
// docs/grafana names only metrics the engine exports, and every metric the
// engine exports is on the dashboard.
func TestGrafanaDashboardMatchesTheMetrics(t *testing.T) {
	raw, err := os.ReadFile("../docs/grafana/oauth-engine.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboard is not valid JSON: %v", err)
	}
	env := newTestEnv(t)
	exported := map[string]bool{}
	for _, f := range env.b.metrics.families {
		exported[f.name] = true
	}
	gauges, err := env.b.metricGauges(context.Background(), env.storage)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range gauges {
		exported[g.name] = true
	}
	used := map[string]bool{}
	name := regexp.MustCompile(`oauth_[a-z_]+`)
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, target := range p.Targets {
			for _, m := range name.FindAllString(target.Expr, -1) {
				for _, suffix := range []string{"_bucket", "_count", "_sum"} {
					if base := strings.TrimSuffix(m, suffix); base != m && exported[base] {
						m = base
					}
				}
				if !exported[m] {
					t.Errorf("panel %q queries %s, which the engine does not export", p.Title, m)
				}
				used[m] = true
			}
		}
	}
	for m := range exported {
		if !used[m] {
			t.Errorf("metric %s is on no panel of the dashboard", m)
		}
	}
}
