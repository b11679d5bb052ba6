package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/vault-plugin-secrets-oauth/vault-plugin-secrets-oauth/tests/harness"
)

// TestVaultAgentRendersALiveToken runs a real `vault agent` with AppRole
// auto-auth and the configuration of docs/consumers.md, rendering the access
// token of a refresh_token role (expiry_only: the provider cascades) and of
// a client_credentials role (on_lease_end) to files, with upstream access
// tokens living 30s. For three token lifetimes it samples both files every
// second: the rendered token must be active upstream at every sample, which
// means Agent replaced each token before it expired (and, for on_lease_end,
// before its lease ended and revoked it).
//
// It also records what Agent did with the leases (renewals and re-reads,
// from the raw audit log and Agent's trace log, and the lease TTLs Vault
// held, from sys/leases/lookup) and logs the timeline: docs/consumers.md
// describes it.
func TestVaultAgentRendersALiveToken(t *testing.T) {
	watchAgent(t, agentWatch{tokenLife: 30 * time.Second, watch: 90 * time.Second, sample: time.Second})
}

// TestVaultAgentShortRoleTTL is the same watch with a role ttl (2s) far
// shorter than the token's life (30s), sampled every 200ms. Agent then
// renews every ~1.4s. Renewals used to walk the lease up to (and, with the
// 1s floor, past) the token's expiry, and Agent held the expired token for
// up to 0.8s; they now stop at the expiry less refresh_skew and are denied
// after it, so Agent reads a new token in time.
func TestVaultAgentShortRoleTTL(t *testing.T) {
	watchAgent(t, agentWatch{tokenLife: 30 * time.Second, watch: 65 * time.Second, sample: 200 * time.Millisecond, roleArgs: []string{"ttl=2s"}})
}

// agentWatch is one run of watchAgent.
type agentWatch struct {
	tokenLife time.Duration // of upstream access tokens
	watch     time.Duration // how long to sample the rendered files
	sample    time.Duration // sampling interval
	roleArgs  []string      // extra settings of both roles, e.g. ttl=5s
}

// watchAgent sets up the engine, AppRole and Agent as
// TestVaultAgentRendersALiveToken describes and watches the rendered files.
func watchAgent(t *testing.T, w agentWatch) {
	tokenLife, watch := w.tokenLife, w.watch
	e := startEngine(t, harness.UpstreamOptions{AccessTokenTTL: tokenLife, ClientCredentialsTTL: tokenLife})
	root := e.v.Client
	rawAudit := filepath.Join(t.TempDir(), "audit-raw.log")
	e.v.MustCLI(t, "audit", "enable", "-path=raw", "file", "file_path="+rawAudit, "log_raw=true")

	e.importGrant(t, "g", "api:read")
	e.v.MustCLI(t, append([]string{"write", "oauth/roles/reader", "grant=g", "scopes=api:read"}, w.roleArgs...)...)
	e.v.MustCLI(t, append([]string{"write", "oauth/roles/svc", "grant_type=client_credentials", "provider=local", "scopes=api:read"}, w.roleArgs...)...)

	// docs/policies/consumer.hcl for reader, and the copy its comment asks
	// for, for svc.
	consumer, err := os.ReadFile(filepath.Join(harness.RepoRoot(), "docs", "policies", "consumer.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, root, "sys/policies/acl/oauth-consumer-reader", map[string]any{"policy": string(consumer)})
	mustWrite(t, root, "sys/policies/acl/oauth-consumer-svc", map[string]any{
		"policy": strings.ReplaceAll(string(consumer), "oauth/creds/reader", "oauth/creds/svc"),
	})

	// AppRole for the agent, as docs/consumers.md sets it up.
	if err := root.Sys().EnableAuthWithOptions("approle", &api.EnableAuthOptions{Type: "approle"}); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, root, "auth/approle/role/agent", map[string]any{
		"token_policies": "oauth-consumer-reader,oauth-consumer-svc", "token_ttl": "1h", "token_max_ttl": "24h",
	})
	roleID, _ := mustRead(t, root, "auth/approle/role/agent/role-id").Data["role_id"].(string)
	secretID, _ := mustWrite(t, root, "auth/approle/role/agent/secret-id", nil).Data["secret_id"].(string)

	creds := t.TempDir() // /etc/vault-agent in the docs
	out := t.TempDir()   // /run/oauth in the docs
	for name, value := range map[string]string{"role-id": roleID, "secret-id": secretID} {
		if err := os.WriteFile(filepath.Join(creds, name), []byte(value+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	config := agentConfigFromDocs(t, map[string]string{
		"https://vault.example.com:8200": e.v.Addr,
		"/etc/vault-agent/":              creds + "/",
		"/run/oauth/":                    out + "/",
	})
	agent := harness.StartAgent(t, harness.AgentOptions{Config: config})

	files := map[string]string{
		"reader": filepath.Join(out, "reader.token"),
		"svc":    filepath.Join(out, "svc.token"),
	}
	roles := []string{"reader", "svc"}
	harness.Eventually(t, 30*time.Second, func() bool {
		if agent.Exited() {
			t.Fatalf("vault agent exited")
		}
		for _, f := range files {
			if b, err := os.ReadFile(f); err != nil || strings.TrimSpace(string(b)) == "" {
				return false
			}
		}
		return true
	}, "vault agent did not render both templates")
	start := time.Now()

	// What the test saw, per role: each lease Agent read (from the raw audit
	// log), its token's upstream expiry, the lease's expire_time in Vault
	// (sys/leases/lookup at every sample until it is gone) and Agent's
	// renewals of it.
	type lease struct {
		id, role, token string
		n               int       // 1 for the role's first lease, ...
		readAt          time.Time // Vault's response to Agent's read
		exp             time.Time // upstream expiry of the token
		revocation      string    // the creds response's revocation
		renewable       bool
		ends            []leaseEnd // expire_time as it changed
		renewals        []time.Time
		gone            bool
		rendered        bool // seen in the rendered file
	}
	leases := map[string]*lease{}
	byToken := map[string]*lease{}
	perRole := map[string][]*lease{}
	failures := 0
	rel := func(at time.Time) string { return fmt.Sprintf("%+.1fs", at.Sub(start).Seconds()) }

	poll := func(now time.Time) {
		forEachAuditEntry(t, rawAudit, func(a auditEntry) {
			if a.Type != "response" || a.Error != "" {
				return
			}
			switch {
			case strings.HasPrefix(a.Request.Path, "oauth/creds/") && a.Response.Secret != nil:
				id := a.Response.Secret.LeaseID
				tok, _ := a.Response.Data["access_token"].(string)
				if leases[id] != nil || tok == "" {
					return
				}
				role := strings.TrimPrefix(a.Request.Path, "oauth/creds/")
				l := &lease{id: id, role: role, token: tok, n: len(perRole[role]) + 1, readAt: a.Time}
				l.revocation, _ = a.Response.Data["revocation"].(string)
				if st := e.up.TokenState(t, tok); st.Exp > 0 {
					l.exp = time.Unix(st.Exp, 0)
				}
				leases[id], byToken[tok] = l, l
				perRole[role] = append(perRole[role], l)
			case a.Request.Path == "sys/leases/renew":
				id, _ := a.Request.Data["lease_id"].(string)
				if l := leases[id]; l != nil && (len(l.renewals) == 0 || a.Time.After(l.renewals[len(l.renewals)-1])) {
					l.renewals = append(l.renewals, a.Time)
				}
			}
		})
		for _, l := range leases {
			if l.gone {
				continue
			}
			s, err := root.Logical().Write("sys/leases/lookup", map[string]any{"lease_id": l.id})
			if err != nil || s == nil {
				l.gone = true
				continue
			}
			// Vault's lookup says renewable=false for a lease whose TTL has
			// just run out and that is not yet revoked; a lease counts as
			// renewable if any lookup while it lived said so.
			if s.Data["renewable"] == true {
				l.renewable = true
			}
			end, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(s.Data["expire_time"]))
			ttl, _ := s.Data["ttl"].(json.Number).Int64()
			if k := len(l.ends); k == 0 || !l.ends[k-1].end.Equal(end) {
				l.ends = append(l.ends, leaseEnd{seen: now, end: end, ttl: ttl})
			}
		}
	}

	ticker := time.NewTicker(w.sample)
	defer ticker.Stop()
	for now := time.Now(); now.Sub(start) <= watch; now = <-ticker.C {
		if agent.Exited() {
			t.Fatalf("vault agent exited at %s", rel(now))
		}
		poll(now)
		for _, role := range roles {
			b, err := os.ReadFile(files[role])
			token := strings.TrimSpace(string(b))
			if err != nil || token == "" {
				failures++
				t.Errorf("%s %s: rendered file unreadable or empty (%v)", rel(now), role, err)
				continue
			}
			n, exp := "?", "unknown"
			if l := byToken[token]; l != nil {
				l.rendered = true
				n, exp = fmt.Sprint(l.n), rel(l.exp)
			}
			if st := e.up.TokenState(t, token); !st.Found || !st.Active || !now.Before(time.Unix(st.Exp, 0)) {
				failures++
				t.Errorf("%s %s: the rendered token (#%s, expiring upstream at %s) is not active upstream (found %v, active %v)",
					rel(now), role, n, exp, st.Found, st.Active)
			}
		}
	}
	agentLog := agent.Log(t)

	// The timeline, for the lead and for docs/consumers.md.
	for _, role := range roles {
		type event struct {
			at   time.Time
			what string
		}
		var evs []event
		add := func(at time.Time, format string, args ...any) {
			evs = append(evs, event{at, fmt.Sprintf("%7s ", rel(at)) + fmt.Sprintf(format, args...)})
		}
		for i, l := range perRole[role] {
			add(l.readAt, "read creds -> lease #%d (...%s), renewable %v, %s; its token expires upstream at %s",
				l.n, l.id[len(l.id)-6:], l.renewable, l.revocation, rel(l.exp))
			for _, r := range l.renewals {
				add(r, "  Agent renews lease #%d", l.n)
			}
			for _, le := range l.ends {
				add(le.seen, "  lease #%d ends at %s (ttl %ds): token expiry %+.1fs",
					l.n, rel(le.end), le.ttl, le.end.Sub(l.exp).Seconds())
			}
			if i+1 < len(perRole[role]) {
				next := perRole[role][i+1].readAt
				margin := l.exp.Sub(next)
				add(next, "  token #%d replaced by #%d %.1fs before it expired upstream (held %.1fs)",
					l.n, l.n+1, margin.Seconds(), next.Sub(l.readAt).Seconds())
				if margin <= 0 {
					t.Errorf("%s: Agent replaced token #%d %.1fs AFTER it expired upstream", role, l.n, -margin.Seconds())
				}
			}
		}
		sort.SliceStable(evs, func(i, j int) bool { return evs[i].at.Before(evs[j].at) })
		lines := make([]string, len(evs))
		for i, ev := range evs {
			lines[i] = ev.what
		}
		t.Logf("%s: timeline (seconds from the first sample; tokens live %s):\n%s", role, tokenLife, strings.Join(lines, "\n"))
	}
	t.Logf("agent log: %d 'starting renewer', %d 'successfully renewed', %d 'renewer done', %d 'non-renewable secret', %d renders",
		strings.Count(agentLog, "starting renewer"), strings.Count(agentLog, "successfully renewed"),
		strings.Count(agentLog, "renewer done"), strings.Count(agentLog, "non-renewable secret"),
		strings.Count(agentLog, "(runner) rendered"))

	// What docs/consumers.md says Agent does with these leases: they are
	// renewable, so Agent renews them and reads creds again when a renewal
	// no longer extends the lease enough.
	if strings.Contains(agentLog, "non-renewable secret") {
		t.Errorf("Agent treated a lease as non-renewable; docs/consumers.md says it renews")
	}
	for _, role := range roles {
		ls := perRole[role]
		// A token rendered at the start and replaced before each expiry:
		// three lifetimes need at least three replacements.
		if want := int(watch/tokenLife) + 1; len(ls) < want {
			t.Errorf("%s: Agent read %d leases in %s of %s tokens, want >= %d", role, len(ls), watch, tokenLife, want)
		}
		wantRevocation := map[string]string{"reader": "expiry_only", "svc": "on_lease_end"}[role]
		for _, l := range ls {
			if l.revocation != wantRevocation {
				t.Errorf("%s: lease #%d has revocation %q, want %q", role, l.n, l.revocation, wantRevocation)
			}
			if !l.rendered && l != ls[len(ls)-1] {
				t.Errorf("%s: lease #%d was read but its token never seen in the file", role, l.n)
			}
			if len(l.ends) > 0 && !l.renewable {
				t.Errorf("%s: lease #%d is not renewable", role, l.n)
			}
		}
		if len(ls) > 0 && len(ls[0].renewals) == 0 {
			t.Errorf("%s: Agent never renewed lease #1", role)
		}
	}
	if failures > 0 {
		t.Fatalf("%d samples found a rendered token that was not active upstream", failures)
	}
}

type leaseEnd struct {
	seen time.Time // when the test saw it
	end  time.Time // the lease's expire_time
	ttl  int64
}

// agentConfigFromDocs returns the Vault Agent configuration block of
// docs/consumers.md (the hcl block after its agent.hcl marker) with the
// placeholders replaced; every placeholder must occur.
func agentConfigFromDocs(t *testing.T, replace map[string]string) string {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join(harness.RepoRoot(), "docs", "consumers.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "<!-- agent.hcl:")
	if !ok {
		t.Fatal("docs/consumers.md has no <!-- agent.hcl: ... --> marker")
	}
	_, rest, ok = strings.Cut(rest, "```hcl\n")
	if !ok {
		t.Fatal("docs/consumers.md: no ```hcl block after the agent.hcl marker")
	}
	config, _, ok := strings.Cut(rest, "```")
	if !ok {
		t.Fatal("docs/consumers.md: the agent.hcl block does not end")
	}
	for from, to := range replace {
		if !strings.Contains(config, from) {
			t.Fatalf("docs/consumers.md: the agent configuration no longer contains %q", from)
		}
		config = strings.ReplaceAll(config, from, to)
	}
	return config
}

type auditEntry struct {
	Time    time.Time `json:"time"`
	Type    string    `json:"type"`
	Error   string    `json:"error"`
	Request struct {
		Path      string         `json:"path"`
		Operation string         `json:"operation"`
		Data      map[string]any `json:"data"`
	} `json:"request"`
	Response struct {
		Data   map[string]any `json:"data"`
		Secret *struct {
			LeaseID string `json:"lease_id"`
		} `json:"secret"`
	} `json:"response"`
}

func forEachAuditEntry(t *testing.T, path string, fn func(auditEntry)) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1024*1024), 16*1024*1024)
	for sc.Scan() {
		var e auditEntry
		if json.Unmarshal(sc.Bytes(), &e) == nil {
			fn(e)
		}
	}
}
