package backend

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/vault-plugin-secrets-oauth/vault-plugin-secrets-oauth/backend/oauthclient"
)

// Vault's sys/metrics cannot carry an external plugin's metrics, so the
// engine keeps its own and serves them at oauth/metrics. They are this
// process's: counters start at zero when the plugin starts, and each node
// of a cluster counts what it did (scrape every node). Labels carry only
// role, provider and grant-status names and fixed words, never a token or
// other request text; each family holds at most maxLabelSets label sets,
// and later ones are counted under the value "_other".
const maxLabelSets = 500

// otherLabel stands in for label values beyond maxLabelSets.
const otherLabel = "_other"

// latencyBuckets are the upper bounds, in seconds, of the upstream request
// histograms.
func latencyBuckets() []float64 {
	return []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}
}

// metricFamily is one named metric with its label names.
type metricFamily struct {
	name, help, kind string // kind: counter, histogram
	labels           []string
	mu               sync.Mutex
	series           map[string]*series
}

type series struct {
	values  []string
	count   float64   // counter value, or histogram count
	sum     float64   // histogram sum
	buckets []float64 // histogram: cumulative counts per latencyBuckets
}

func newFamily(kind, name, help string, labels ...string) *metricFamily {
	return &metricFamily{name: name, help: help, kind: kind, labels: labels, series: map[string]*series{}}
}

// at returns the series for values (capped); f.mu is held.
func (f *metricFamily) at(values []string) *series {
	key := strings.Join(values, "\x00")
	if s, ok := f.series[key]; ok {
		return s
	}
	if len(f.series) >= maxLabelSets {
		values = make([]string, len(f.labels))
		for i := range values {
			values[i] = otherLabel
		}
		key = strings.Join(values, "\x00")
		if s, ok := f.series[key]; ok {
			return s
		}
	}
	s := &series{values: append([]string(nil), values...)}
	if f.kind == "histogram" {
		s.buckets = make([]float64, len(latencyBuckets()))
	}
	f.series[key] = s
	return s
}

func (f *metricFamily) inc(values ...string) { f.add(1, values...) }

func (f *metricFamily) add(v float64, values ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.at(values).count += v
}

func (f *metricFamily) observe(d time.Duration, values ...string) {
	secs := d.Seconds()
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.at(values)
	s.count++
	s.sum += secs
	for i, le := range latencyBuckets() {
		if secs <= le {
			s.buckets[i]++
		}
	}
}

// engineMetrics are the engine's metric families.
type engineMetrics struct {
	credsIssued      *metricFamily
	refreshes        *metricFamily
	upstreamLatency  *metricFamily
	rotations        *metricFamily
	leaseRevocations *metricFamily
	keepAlives       *metricFamily
	interrupted      *metricFamily
	grantRevocations *metricFamily
	sweeps           *metricFamily
	sweepSeconds     *metricFamily
	sweepItems       *metricFamily
	lifecycleEvents  *metricFamily
	families         []*metricFamily
}

func newEngineMetrics() *engineMetrics {
	m := &engineMetrics{
		credsIssued: newFamily("counter", "oauth_creds_issued_total",
			"creds reads by role and outcome (issued, reused, denied, invalid_grant, upstream_error, error).", "role", "outcome"),
		refreshes: newFamily("counter", "oauth_refreshes_total",
			"Refresh-token redemptions by provider and outcome (success, invalid_grant, timeout, unreachable, or the upstream's error code).", "provider", "outcome"),
		upstreamLatency: newFamily("histogram", "oauth_upstream_request_duration_seconds",
			"Duration of calls to upstream endpoints by provider and endpoint (token, revocation, introspection, device_authorization).", "provider", "endpoint"),
		rotations: newFamily("counter", "oauth_refresh_token_rotations_total",
			"Refreshes that returned a new refresh token, by provider.", "provider"),
		leaseRevocations: newFamily("counter", "oauth_lease_revocations_total",
			"Lease ends by provider and what happened upstream (revoked, expiry_only, shared_kept, failed).", "provider", "outcome"),
		keepAlives: newFamily("counter", "oauth_keepalive_refreshes_total",
			"Background refreshes (keep_alive, or before a refresh token's own end) by provider and outcome.", "provider", "outcome"),
		interrupted: newFamily("counter", "oauth_interrupted_refreshes_total",
			"Refreshes that found an earlier refresh of the grant interrupted, by provider and outcome: recovered (the provider still took the stored token, e.g. within a rotation grace period) or lost.", "provider", "outcome"),
		grantRevocations: newFamily("counter", "oauth_grant_revocations_total",
			"Revocations of grants upstream by provider and outcome (revoked, not_revocable, failed).", "provider", "outcome"),
		sweeps: newFamily("counter", "oauth_sweeps_total",
			"Background sweeps run."),
		sweepSeconds: newFamily("counter", "oauth_sweep_seconds_total",
			"Time spent in background sweeps."),
		sweepItems: newFamily("counter", "oauth_sweep_items_total",
			"What background sweeps handled, by kind (due, expired, revocations, replaced, pending).", "kind"),
		lifecycleEvents: newFamily("counter", "oauth_lifecycle_events_total",
			"Grant lifecycle events logged, by event.", "event"),
	}
	m.families = []*metricFamily{
		m.credsIssued, m.refreshes, m.upstreamLatency, m.rotations, m.leaseRevocations, m.keepAlives,
		m.interrupted, m.grantRevocations, m.sweeps, m.sweepSeconds, m.sweepItems, m.lifecycleEvents,
	}
	return m
}

// gauge is a value read at scrape time.
type gauge struct {
	name, help string
	labels     []string
	points     []gaugePoint
}

type gaugePoint struct {
	values []string
	value  float64
}

// prometheusText writes the families and gauges in the Prometheus text
// exposition format (version 0.0.4).
func (m *engineMetrics) prometheusText(gauges []gauge) string {
	var b strings.Builder
	for _, f := range m.families {
		f.mu.Lock()
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", f.name, f.help, f.name, f.kind)
		for _, s := range f.sortedSeries() {
			labels := labelText(f.labels, s.values, "")
			if f.kind == "counter" {
				fmt.Fprintf(&b, "%s%s %s\n", f.name, labels, number(s.count))
				continue
			}
			for i, le := range latencyBuckets() {
				fmt.Fprintf(&b, "%s_bucket%s %s\n", f.name, labelText(f.labels, s.values, number(le)), number(s.buckets[i]))
			}
			fmt.Fprintf(&b, "%s_bucket%s %s\n", f.name, labelText(f.labels, s.values, "+Inf"), number(s.count))
			fmt.Fprintf(&b, "%s_sum%s %s\n%s_count%s %s\n", f.name, labels, number(s.sum), f.name, labels, number(s.count))
		}
		f.mu.Unlock()
	}
	for _, g := range gauges {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s gauge\n", g.name, g.help, g.name)
		for _, p := range g.points {
			fmt.Fprintf(&b, "%s%s %s\n", g.name, labelText(g.labels, p.values, ""), number(p.value))
		}
	}
	return b.String()
}

// jsonView is the same content for format=json.
func (m *engineMetrics) jsonView(gauges []gauge) map[string]any {
	out := map[string]any{}
	for _, f := range m.families {
		f.mu.Lock()
		var points []map[string]any
		for _, s := range f.sortedSeries() {
			p := map[string]any{"labels": labelMap(f.labels, s.values)}
			if f.kind == "counter" {
				p["value"] = s.count
			} else {
				p["count"], p["sum"] = s.count, s.sum
				buckets := map[string]float64{}
				for i, le := range latencyBuckets() {
					buckets[number(le)] = s.buckets[i]
				}
				p["buckets"] = buckets
			}
			points = append(points, p)
		}
		f.mu.Unlock()
		if points == nil {
			points = []map[string]any{}
		}
		out[f.name] = map[string]any{"type": f.kind, "help": f.help, "series": points}
	}
	for _, g := range gauges {
		points := []map[string]any{}
		for _, p := range g.points {
			points = append(points, map[string]any{"labels": labelMap(g.labels, p.values), "value": p.value})
		}
		out[g.name] = map[string]any{"type": "gauge", "help": g.help, "series": points}
	}
	return out
}

func (f *metricFamily) sortedSeries() []*series {
	keys := make([]string, 0, len(f.series))
	for k := range f.series {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]*series, len(keys))
	for i, k := range keys {
		out[i] = f.series[k]
	}
	return out
}

func labelText(names, values []string, le string) string {
	var parts []string
	for i, n := range names {
		parts = append(parts, fmt.Sprintf("%s=%q", n, escapeLabel(values[i])))
	}
	if le != "" {
		parts = append(parts, fmt.Sprintf("le=%q", le))
	}
	if len(parts) == 0 {
		return ""
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// escapeLabel keeps a label value printable; %q then escapes quotes and
// backslashes as the exposition format wants.
func escapeLabel(v string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '_'
		}
		return r
	}, v)
}

func labelMap(names, values []string) map[string]string {
	m := make(map[string]string, len(names))
	for i, n := range names {
		m[n] = values[i]
	}
	return m
}

func number(v float64) string {
	if math.IsInf(v, 1) {
		return "+Inf"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// metricGauges reads what the gauges show from storage: grants by status
// (from the grant index), the revocation queue, pending authorizations,
// and the grants whose write is still being retried.
func (b *backend) metricGauges(ctx context.Context, s logical.Storage) ([]gauge, error) {
	byStatus := map[string]float64{statusActive: 0, statusPending: 0, statusInvalid: 0, statusExpired: 0, statusRevoking: 0}
	shards, err := s.List(ctx, grantIndexPrefix)
	if err != nil {
		return nil, err
	}
	for _, key := range shards {
		shard := grantIndexShard{}
		if _, err := getJSON(ctx, s, grantIndexPrefix+key, &shard); err != nil {
			return nil, err
		}
		for _, e := range shard {
			byStatus[e.Status]++
		}
	}
	grants := gauge{name: "oauth_grants", help: "Grants by status.", labels: []string{"status"}}
	statuses := make([]string, 0, len(byStatus))
	for st := range byStatus {
		statuses = append(statuses, st)
	}
	sort.Strings(statuses)
	for _, st := range statuses {
		grants.points = append(grants.points, gaugePoint{values: []string{st}, value: byStatus[st]})
	}

	queued, err := s.List(ctx, revokingPrefix)
	if err != nil {
		return nil, err
	}
	oldest := 0.0
	for _, name := range queued {
		m, err := getRevocationMarker(ctx, s, name)
		if err != nil {
			return nil, err
		}
		if m != nil && !m.QueuedAt.IsZero() {
			oldest = max(oldest, b.now().Sub(m.QueuedAt).Seconds())
		}
	}
	pending, err := s.List(ctx, pendingPrefix)
	if err != nil {
		return nil, err
	}
	one := func(name, help string, v float64) gauge {
		return gauge{name: name, help: help, points: []gaugePoint{{value: v}}}
	}
	return []gauge{
		grants,
		one("oauth_revocations_queued", "Grants waiting for their upstream revocation (the revoking queue).", float64(len(queued))),
		one("oauth_revocations_oldest_age_seconds", "Age of the oldest queued revocation; 0 when none is queued.", oldest),
		one("oauth_pending_authorizations", "Authorization and device flows not yet completed.", float64(len(pending))),
		one("oauth_unsaved_grants", "Grants whose write after a refresh failed and is being retried.", float64(len(b.unsavedGrantNames()))),
	}, nil
}

// refreshOutcome names how a refresh ended, from a bounded set of words:
// an upstream's own error codes are counted only when RFC 6749 names them.
func refreshOutcome(err error) string {
	if err == nil {
		return "success"
	}
	e, ok := oauthclient.AsError(err)
	switch {
	case !ok:
		return "error"
	case e.Code == oauthclient.ErrCodeInvalidGrant:
		return "invalid_grant"
	case e.StatusCode == http.StatusTooManyRequests:
		return "rate_limited"
	case e.Code != "":
		switch e.Code {
		case "invalid_request", "invalid_client", "unauthorized_client", "unsupported_grant_type",
			"invalid_scope", "invalid_target", "server_error", "temporarily_unavailable":
			return e.Code
		}
		return "other_error"
	case e.StatusCode != 0:
		return "http_error"
	case errors.Is(e, context.DeadlineExceeded) || isTimeout(e.Err):
		return "timeout"
	}
	return "unreachable"
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// credsOutcome names how a creds read ended.
func credsOutcome(it *issuedToken, err error) string {
	if err == nil {
		if it.shared && !it.tokenFresh {
			return "reused"
		}
		return "issued"
	}
	var coded logical.HTTPCodedError
	if errors.As(err, &coded) {
		switch code := coded.Code(); {
		case code == http.StatusTooManyRequests || code >= 500:
			return "upstream_error"
		case code >= 400:
			return "denied"
		}
	}
	return "error"
}

// leaseEndOutcome names what a lease's end did upstream.
func leaseEndOutcome(ld *leaseData, err error) string {
	switch {
	case err != nil:
		return "failed"
	case ld.Shared:
		return "shared"
	case ld.Revocation == revocationOnLeaseEnd:
		return "revoked"
	}
	return revocationExpiryOnly
}
