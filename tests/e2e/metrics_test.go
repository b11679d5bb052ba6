package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vault-plugin-secrets-oauth/vault-plugin-secrets-oauth/tests/harness"
)

// TestMetricsAndLifecycleEvents runs a scripted scenario through the real
// Vault and the real upstream (creds, a refresh the upstream refuses, a
// lease's end, an expiry, a delete), then scrapes oauth/metrics in both
// formats and checks that every counter moved exactly as the scenario did,
// and that the scenario's lifecycle events are in the Vault server log, in
// order, with no token in them.
func TestMetricsAndLifecycleEvents(t *testing.T) {
	v := harness.StartVault(t)
	up := harness.StartUpstream(t, harness.UpstreamOptions{})
	v.MustCLI(t, "write", "oauth/config", "upstream_timeout=5s")
	v.MustCLI(t, "write", "oauth/providers/local", "issuer="+up.URL, "client_id="+up.ClientID, "client_secret="+up.ClientSecret)

	before := scrapeJSON(t, v)

	// g1: two creds (two refreshes, two rotations), one lease ended, then deleted.
	rt1, _ := up.Mint(t, up.ClientID, "offline_access api:read", "alice")
	mustCLIStdin(t, v, rt1, "write", "oauth/grants/g1", "provider=local", "refresh_token=-")
	v.MustCLI(t, "write", "oauth/roles/r1", "grant=g1")
	var leases []string
	for i := 0; i < 2; i++ {
		s, err := v.Client.Logical().Read("oauth/creds/r1")
		if err != nil {
			t.Fatal(err)
		}
		leases = append(leases, s.LeaseID)
	}
	v.MustCLI(t, "lease", "revoke", "-sync", leases[0])
	// g2: the upstream refuses its refresh token.
	mustCLIStdin(t, v, "not-a-token-the-upstream-issued", "write", "oauth/grants/g2", "provider=local", "refresh_token=-")
	v.MustCLI(t, "write", "oauth/roles/r2", "grant=g2")
	if _, err := v.Client.Logical().Read("oauth/creds/r2"); httpStatus(err) != http.StatusBadRequest {
		t.Fatalf("creds of a refused grant: %v", err)
	}
	// g3: max_age runs out; the sweep expires and revokes it.
	rt3, _ := up.Mint(t, up.ClientID, "offline_access api:read", "carol")
	mustCLIStdin(t, v, rt3, "write", "oauth/grants/g3", "provider=local", "refresh_token=-", "max_age=1s")
	time.Sleep(1500 * time.Millisecond)
	v.MustCLI(t, "write", "-force", "oauth/tidy")
	deadline := time.Now().Add(20 * time.Second)
	for grantData(t, v, "g3")["status"] != "expired" {
		if time.Now().After(deadline) {
			t.Fatalf("g3 never expired: %v", grantData(t, v, "g3"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	v.MustCLI(t, "lease", "revoke", "-sync", leases[1])
	v.MustCLI(t, "delete", "oauth/roles/r1")
	v.MustCLI(t, "delete", "oauth/grants/g1")

	after := scrapeJSON(t, v)
	delta := func(metric string, labels map[string]string) float64 {
		return after.value(t, metric, labels) - before.value(t, metric, labels)
	}
	for _, c := range []struct {
		metric string
		labels map[string]string
		want   float64
	}{
		{"oauth_creds_issued_total", map[string]string{"role": "r1", "outcome": "issued"}, 2},
		{"oauth_creds_issued_total", map[string]string{"role": "r2", "outcome": "denied"}, 1},
		{"oauth_refreshes_total", map[string]string{"provider": "local", "outcome": "success"}, 2},
		{"oauth_refreshes_total", map[string]string{"provider": "local", "outcome": "invalid_grant"}, 1},
		{"oauth_refresh_token_rotations_total", map[string]string{"provider": "local"}, 2},
		// node-oidc-provider revokes a grant with any of its tokens
		// (revocation_cascades), so a lease's end revokes nothing upstream.
		{"oauth_lease_revocations_total", map[string]string{"provider": "local", "outcome": "expiry_only"}, 2},
		{"oauth_grant_revocations_total", map[string]string{"provider": "local", "outcome": "revoked"}, 2},
		{"oauth_lifecycle_events_total", map[string]string{"event": "grant.created"}, 3},
		{"oauth_lifecycle_events_total", map[string]string{"event": "grant.authorized"}, 3},
		{"oauth_lifecycle_events_total", map[string]string{"event": "grant.rotated"}, 2},
		{"oauth_lifecycle_events_total", map[string]string{"event": "grant.invalid"}, 1},
		{"oauth_lifecycle_events_total", map[string]string{"event": "grant.expired"}, 1},
		{"oauth_lifecycle_events_total", map[string]string{"event": "grant.revocation_queued"}, 2},
		{"oauth_lifecycle_events_total", map[string]string{"event": "grant.revoked"}, 2},
		// Three refreshes reached the token endpoint.
		{"oauth_upstream_request_duration_seconds", map[string]string{"provider": "local", "endpoint": "token"}, 3},
	} {
		if got := delta(c.metric, c.labels); got != c.want {
			t.Errorf("%s%v moved by %v, want %v", c.metric, c.labels, got, c.want)
		}
	}
	if got := delta("oauth_upstream_request_duration_seconds", map[string]string{"provider": "local", "endpoint": "revocation"}); got < 2 {
		t.Errorf("revocation calls counted: %v, want at least the two grants'", got)
	}
	for status, want := range map[string]float64{"active": 0, "invalid": 1, "expired": 1, "revoking": 0} {
		if got := after.value(t, "oauth_grants", map[string]string{"status": status}); got != want {
			t.Errorf("oauth_grants{status=%s} = %v, want %v", status, got, want)
		}
	}
	if got := after.value(t, "oauth_revocations_queued", nil); got != 0 {
		t.Errorf("oauth_revocations_queued = %v, want 0", got)
	}

	// The Prometheus text, as a scrape job with a Vault token reads it.
	req, _ := http.NewRequest(http.MethodGet, v.Addr+"/v1/oauth/metrics", nil)
	req.Header.Set("X-Vault-Token", v.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain; version=0.0.4") {
		t.Fatalf("metrics: HTTP %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	text := string(body)
	for _, line := range []string{
		"# TYPE oauth_refreshes_total counter",
		fmt.Sprintf(`oauth_refreshes_total{provider="local",outcome="invalid_grant"} %v`, after.value(t, "oauth_refreshes_total", map[string]string{"provider": "local", "outcome": "invalid_grant"})),
		"# TYPE oauth_upstream_request_duration_seconds histogram",
		`oauth_upstream_request_duration_seconds_bucket{provider="local",endpoint="token",le="+Inf"} 3`,
		`oauth_grants{status="invalid"} 1`,
	} {
		if !strings.Contains(text, line+"\n") {
			t.Errorf("Prometheus text lacks %q", line)
		}
	}
	sampleLine := regexp.MustCompile(`^[a-z_]+(\{[a-z_]+="[^"\n]*"(,[a-z_]+="[^"\n]*")*\})? [-+0-9.eInf]+$`)
	for _, l := range strings.Split(strings.TrimSpace(text), "\n") {
		if !strings.HasPrefix(l, "# ") && !sampleLine.MatchString(l) {
			t.Errorf("not a Prometheus sample line: %q", l)
		}
	}

	// The lifecycle events, per grant, in order.
	logData, err := os.ReadFile(v.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	events := map[string][]string{}
	eventLine := regexp.MustCompile(`grant lifecycle: (.*)$`)
	for _, l := range strings.Split(string(logData), "\n") {
		m := eventLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		kv := logFields(m[1])
		for _, k := range []string{"event", "grant", "grant_id", "provider", "owner_entity_id", "reason"} {
			if _, ok := kv[k]; !ok {
				t.Errorf("event line without %s: %s", k, l)
			}
		}
		events[kv["grant"]] = append(events[kv["grant"]], kv["event"])
		for _, secret := range []string{rt1, rt3, up.ClientSecret} {
			if strings.Contains(l, secret) {
				t.Errorf("an event line carries a secret: %s", l)
			}
		}
	}
	for grant, want := range map[string][]string{
		"g1": {"grant.created", "grant.authorized", "grant.rotated", "grant.rotated", "grant.revocation_queued", "grant.revoked"},
		"g2": {"grant.created", "grant.authorized", "grant.invalid"},
		"g3": {"grant.created", "grant.authorized", "grant.expired", "grant.revocation_queued", "grant.revoked"},
	} {
		if got := strings.Join(events[grant], " "); got != strings.Join(want, " ") {
			t.Errorf("events of %s:\n got  %s\n want %s", grant, got, strings.Join(want, " "))
		}
	}
}

// metricsDoc is oauth/metrics?format=json.
type metricsDoc map[string]struct {
	Type   string `json:"type"`
	Series []struct {
		Labels map[string]string `json:"labels"`
		Value  *float64          `json:"value"`
		Count  *float64          `json:"count"`
	} `json:"series"`
}

func scrapeJSON(t *testing.T, v *harness.Vault) metricsDoc {
	t.Helper()
	s, err := v.Client.Logical().ReadWithData("oauth/metrics", map[string][]string{"format": {"json"}})
	if err != nil || s == nil {
		t.Fatalf("metrics: %v", err)
	}
	raw, _ := json.Marshal(s.Data)
	var doc metricsDoc
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	return doc
}

// value is a counter's or gauge's value (a histogram's count) for exactly
// these labels; 0 when the series does not exist yet, but the metric must.
func (d metricsDoc) value(t *testing.T, metric string, labels map[string]string) float64 {
	t.Helper()
	m, ok := d[metric]
	if !ok {
		t.Fatalf("metric %s is missing", metric)
	}
	for _, s := range m.Series {
		if len(s.Labels) != len(labels) {
			continue
		}
		match := true
		for k, v := range labels {
			if s.Labels[k] != v {
				match = false
			}
		}
		if !match {
			continue
		}
		switch {
		case s.Value != nil:
			return *s.Value
		case s.Count != nil:
			return *s.Count
		}
		t.Fatalf("%s%v has no value", metric, labels)
	}
	return 0
}

// logFields parses hclog's key=value pairs (values with spaces quoted).
func logFields(s string) map[string]string {
	out := map[string]string{}
	re := regexp.MustCompile(`([a-z_]+)=("(?:[^"\\]|\\.)*"|\S*)`)
	for _, m := range re.FindAllStringSubmatch(s, -1) {
		v := m[2]
		if strings.HasPrefix(v, `"`) {
			var unq string
			if json.Unmarshal([]byte(v), &unq) == nil {
				v = unq
			}
		}
		out[m[1]] = v
	}
	return out
}

func mustCLIStdin(t *testing.T, v *harness.Vault, stdin string, args ...string) {
	t.Helper()
	if out, err := v.CLIWithStdin(t, stdin, args...); err != nil {
		t.Fatalf("vault %s: %v %s", strings.Join(args, " "), err, out)
	}
}
