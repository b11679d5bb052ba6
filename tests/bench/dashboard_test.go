package bench

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// The dashboard picture: while the bench runs, oauth/metrics is scraped
// every two seconds as a Prometheus job would; at the end the panels of
// docs/grafana/oauth-engine.json are drawn from those samples, computed as
// their queries compute them (rate over the scrape interval, histogram
// quantiles from bucket deltas, gauges as read). Grafana itself is not
// available here, so this is the dashboard's content, not its look.

const scrapeEvery = 2 * time.Second

type metricSample struct {
	at  time.Time
	doc map[string]metricFamilyJSON
}

type metricFamilyJSON struct {
	Type   string `json:"type"`
	Series []struct {
		Labels  map[string]string  `json:"labels"`
		Value   float64            `json:"value"`
		Count   float64            `json:"count"`
		Buckets map[string]float64 `json:"buckets"`
	} `json:"series"`
}

type sampler struct {
	mu      sync.Mutex
	samples []metricSample
	stop    chan struct{}
	done    chan struct{}
}

// startSampler scrapes the engine's metrics until stopSampler.
func (s *suite) startSampler() {
	s.metrics = &sampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.metrics.done)
		t := time.NewTicker(scrapeEvery)
		defer t.Stop()
		for {
			s.scrapeOnce()
			select {
			case <-s.metrics.stop:
				s.scrapeOnce()
				return
			case <-t.C:
			}
		}
	}()
}

func (s *suite) stopSampler() {
	close(s.metrics.stop)
	<-s.metrics.done
}

func (s *suite) scrapeOnce() {
	req, _ := http.NewRequest(http.MethodGet, s.v.Addr+"/v1/oauth/metrics?format=json", nil)
	req.Header.Set("X-Vault-Token", s.v.Token)
	resp, err := s.http.Do(req)
	if err != nil {
		return
	}
	defer resp.Body.Close()
	var body struct {
		Data map[string]metricFamilyJSON `json:"data"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&body) != nil {
		return
	}
	s.metrics.mu.Lock()
	s.metrics.samples = append(s.metrics.samples, metricSample{at: time.Now(), doc: body.Data})
	s.metrics.mu.Unlock()
}

// line is one drawn series of a panel.
type line struct {
	name   string
	points []point
}

type point struct {
	at time.Time
	v  float64
}

// rateBy is sum by (label) (rate(metric[interval])) between samples.
func rateBy(samples []metricSample, metric, label string) []line {
	series := map[string][]point{}
	for i := 1; i < len(samples); i++ {
		dt := samples[i].at.Sub(samples[i-1].at).Seconds()
		now, prev := sumBy(samples[i], metric, label), sumBy(samples[i-1], metric, label)
		for k, v := range now {
			d := v - prev[k]
			if d < 0 { // a restart
				d = v
			}
			series[k] = append(series[k], point{samples[i].at, d / dt})
		}
	}
	return sortedLines(series)
}

func sumBy(s metricSample, metric, label string) map[string]float64 {
	out := map[string]float64{}
	for _, ser := range s.doc[metric].Series {
		v := ser.Value
		if s.doc[metric].Type == "histogram" {
			v = ser.Count
		}
		out[ser.Labels[label]] += v
	}
	return out
}

// gaugeBy is sum by (label) (gauge).
func gaugeBy(samples []metricSample, metric, label string) []line {
	series := map[string][]point{}
	for _, s := range samples {
		for k, v := range sumBy(s, metric, label) {
			series[k] = append(series[k], point{s.at, v})
		}
	}
	return sortedLines(series)
}

// quantileBy is histogram_quantile(q, sum by (le, label) (rate(buckets))).
func quantileBy(samples []metricSample, metric, label string, q float64) []line {
	series := map[string][]point{}
	for i := 1; i < len(samples); i++ {
		now, prev := bucketsBy(samples[i], metric, label), bucketsBy(samples[i-1], metric, label)
		for k, b := range now {
			les := make([]float64, 0, len(b))
			for le := range b {
				les = append(les, le)
			}
			sort.Float64s(les)
			deltas := make([]float64, len(les))
			for j, le := range les {
				deltas[j] = b[le] - prev[k][le]
			}
			if v, ok := quantile(q, les, deltas); ok {
				series[fmt.Sprintf("p%g %s", q*100, k)] = append(series[fmt.Sprintf("p%g %s", q*100, k)], point{samples[i].at, v})
			}
		}
	}
	return sortedLines(series)
}

func bucketsBy(s metricSample, metric, label string) map[string]map[float64]float64 {
	out := map[string]map[float64]float64{}
	for _, ser := range s.doc[metric].Series {
		k := ser.Labels[label]
		if out[k] == nil {
			out[k] = map[float64]float64{}
		}
		for le, c := range ser.Buckets {
			var bound float64
			fmt.Sscanf(le, "%g", &bound)
			out[k][bound] += c
		}
	}
	return out
}

// quantile interpolates within the bucket that holds rank q, as
// Prometheus's histogram_quantile does (no +Inf bucket here: the last
// bound caps the answer).
func quantile(q float64, les, cumulative []float64) (float64, bool) {
	if len(les) == 0 || cumulative[len(cumulative)-1] <= 0 {
		return 0, false
	}
	rank := q * cumulative[len(cumulative)-1]
	lower, below := 0.0, 0.0
	for i, le := range les {
		if cumulative[i] >= rank {
			in := cumulative[i] - below
			if in <= 0 {
				return le, true
			}
			return lower + (le-lower)*(rank-below)/in, true
		}
		lower, below = le, cumulative[i]
	}
	return les[len(les)-1], true
}

func sortedLines(series map[string][]point) []line {
	var out []line
	for k, pts := range series {
		if k == "" {
			k = "all"
		}
		out = append(out, line{name: k, points: pts})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

type panel struct {
	title, unit string
	lines       []line
}

// renderDashboard writes the picture next to the dashboard JSON.
func (s *suite) renderDashboard() {
	s.metrics.mu.Lock()
	samples := append([]metricSample(nil), s.metrics.samples...)
	s.metrics.mu.Unlock()
	if len(samples) < 3 {
		s.logf("dashboard: only %d metric samples; no picture", len(samples))
		return
	}
	panels := []panel{
		{"creds issued per second, by outcome", "/s", rateBy(samples, "oauth_creds_issued_total", "outcome")},
		{"Refreshes per second, by outcome", "/s", rateBy(samples, "oauth_refreshes_total", "outcome")},
		{"Upstream latency by endpoint (p50, p95)", "s", append(
			quantileBy(samples, "oauth_upstream_request_duration_seconds", "endpoint", 0.5),
			quantileBy(samples, "oauth_upstream_request_duration_seconds", "endpoint", 0.95)...)},
		{"Upstream calls per second, by endpoint", "/s", rateBy(samples, "oauth_upstream_request_duration_seconds", "endpoint")},
		{"Grants by status", "", gaugeBy(samples, "oauth_grants", "status")},
		{"Lease ends per second, by outcome", "/s", rateBy(samples, "oauth_lease_revocations_total", "outcome")},
		{"Rotations per second, by provider", "/s", rateBy(samples, "oauth_refresh_token_rotations_total", "provider")},
		{"Revocations queued", "", gaugeBy(samples, "oauth_revocations_queued", "")},
	}
	svg := drawPanels(panels, samples[0].at, samples[len(samples)-1].at)
	path := filepath.Join(repoRoot(), "docs", "grafana", "bench-dashboard.svg")
	if err := os.WriteFile(path, []byte(svg), 0o644); err != nil {
		s.logf("dashboard: %v", err)
		return
	}
	s.logf("dashboard: %d samples over %s drawn to %s", len(samples), samples[len(samples)-1].at.Sub(samples[0].at).Round(time.Second), path)
}

func drawPanels(panels []panel, from, to time.Time) string {
	const (
		cols, pw, ph, pad = 2, 600, 270, 16
		plotL, plotT      = 70, 34
		plotW, plotH      = pw - plotL - 20, ph - plotT - 70
	)
	colors := []string{"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"}
	rows := (len(panels) + cols - 1) / cols
	width, height := cols*(pw+pad)+pad, rows*(ph+pad)+pad+40
	span := to.Sub(from).Seconds()
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">`+"\n", width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="#f4f5f5"/><text x="%d" y="26" font-size="15" font-weight="bold">Vault OAuth secrets engine: the dashboard's panels over one make bench run on its single Vault (%s, %s)</text>`+"\n",
		pad, from.UTC().Format("2006-01-02 15:04 UTC"), to.Sub(from).Round(time.Minute))
	for i, p := range panels {
		ox, oy := pad+(i%cols)*(pw+pad), 40+pad+(i/cols)*(ph+pad)
		fmt.Fprintf(&b, `<g transform="translate(%d,%d)"><rect width="%d" height="%d" fill="white" stroke="#ccc"/>`, ox, oy, pw, ph)
		fmt.Fprintf(&b, `<text x="10" y="20" font-size="13" font-weight="bold">%s</text>`, escape(p.title))
		maxV := 0.0
		for _, l := range p.lines {
			for _, pt := range l.points {
				maxV = math.Max(maxV, pt.v)
			}
		}
		if maxV == 0 {
			maxV = 1
		}
		maxV = niceCeil(maxV)
		for k := 0; k <= 4; k++ {
			y := plotT + plotH - float64(plotH)*float64(k)/4
			fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#eee"/><text x="%d" y="%.1f" text-anchor="end">%s</text>`,
				plotL, y, plotL+plotW, y, plotL-4, y+4, axisLabel(maxV*float64(k)/4, p.unit))
		}
		for k := 0; k <= 4; k++ {
			x := plotL + float64(plotW)*float64(k)/4
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">+%s</text>`, x, plotT+plotH+14, (time.Duration(span*float64(k)/4) * time.Second).Round(time.Second))
		}
		for j, l := range p.lines {
			color := colors[j%len(colors)]
			// A gap in the samples (no calls to quantile over) breaks the
			// line, as Grafana draws missing points.
			var pts []string
			flush := func() {
				if len(pts) > 0 {
					fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`, color, strings.Join(pts, " "))
				}
				pts = nil
			}
			for k, pt := range l.points {
				if k > 0 && pt.at.Sub(l.points[k-1].at) > 3*scrapeEvery {
					flush()
				}
				x := plotL + float64(plotW)*pt.at.Sub(from).Seconds()/span
				y := plotT + float64(plotH) - float64(plotH)*pt.v/maxV
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", x, y))
			}
			flush()
			lx, ly := 10+(j%3)*190, plotT+plotH+32+(j/3)*14
			fmt.Fprintf(&b, `<rect x="%d" y="%d" width="10" height="3" fill="%s"/><text x="%d" y="%d">%s</text>`, lx, ly-4, color, lx+14, ly, escape(l.name))
		}
		if len(p.lines) == 0 {
			fmt.Fprintf(&b, `<text x="%d" y="%d" fill="#888">no data</text>`, plotL+10, plotT+20)
		}
		b.WriteString("</g>\n")
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func niceCeil(v float64) float64 {
	exp := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if v <= m*exp {
			return m * exp
		}
	}
	return 10 * exp
}

func axisLabel(v float64, unit string) string {
	switch {
	case unit == "s" && v < 1 && v > 0:
		return fmt.Sprintf("%gms", math.Round(v*1e4)/10)
	case v >= 1000:
		return fmt.Sprintf("%gk%s", math.Round(v/100)/10, unit)
	}
	return fmt.Sprintf("%g%s", math.Round(v*100)/100, unit)
}

// TestDashboardMath checks the picture's arithmetic on made-up samples:
// the rate of a counter, and a quantile inside a bucket.
func TestDashboardMath(t *testing.T) {
	at := time.Unix(1_700_000_000, 0)
	mk := func(sec int, issued float64, buckets map[string]float64, count float64) metricSample {
		var s metricSample
		s.at = at.Add(time.Duration(sec) * time.Second)
		raw := fmt.Sprintf(`{"oauth_creds_issued_total":{"type":"counter","series":[{"labels":{"role":"r","outcome":"issued"},"value":%g}]},
			"oauth_upstream_request_duration_seconds":{"type":"histogram","series":[{"labels":{"provider":"p","endpoint":"token"},"count":%g,"buckets":%s}]}}`,
			issued, count, mustJSON(buckets))
		if err := json.Unmarshal([]byte(raw), &s.doc); err != nil {
			t.Fatal(err)
		}
		return s
	}
	samples := []metricSample{
		mk(0, 10, map[string]float64{"0.01": 0, "0.1": 0, "1": 0}, 0),
		mk(2, 30, map[string]float64{"0.01": 10, "0.1": 90, "1": 100}, 100),
	}
	rates := rateBy(samples, "oauth_creds_issued_total", "outcome")
	if len(rates) != 1 || rates[0].name != "issued" || rates[0].points[0].v != 10 {
		t.Fatalf("rate = %+v, want 10/s issued", rates)
	}
	p50 := quantileBy(samples, "oauth_upstream_request_duration_seconds", "endpoint", 0.5)
	// Rank 50 of 100 lies in (0.01, 0.1], which holds 80: 0.01 + 0.09*40/80.
	if len(p50) != 1 || math.Abs(p50[0].points[0].v-0.055) > 1e-9 {
		t.Fatalf("p50 = %+v, want 0.055", p50)
	}
	svg := drawPanels([]panel{{"creds", "/s", rates}, {"latency", "s", p50}}, samples[0].at, samples[1].at)
	if !strings.HasPrefix(svg, "<svg") || strings.Count(svg, "<polyline") != 2 {
		t.Fatalf("picture: %s", svg)
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
