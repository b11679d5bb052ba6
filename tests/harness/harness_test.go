package harness_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vault-plugin-secrets-oauth/vault-plugin-secrets-oauth/tests/harness"
)

func TestMain(m *testing.M) {
	os.Exit(harness.RunTests(m))
}

// TestHarnessSmoke checks the harness itself: the upstream starts and its
// test backdoor works, Vault starts with the plugin mounted at oauth/.
func TestHarnessSmoke(t *testing.T) {
	start := time.Now()
	up := harness.StartUpstream(t, harness.UpstreamOptions{})
	upReady := time.Since(start)
	v := harness.StartVault(t)
	t.Logf("upstream ready in %s, vault ready in %s", upReady.Round(time.Millisecond), (time.Since(start) - upReady).Round(time.Millisecond))

	out := v.MustCLI(t, "secrets", "list", "-format=json")
	var mounts map[string]struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal([]byte(out), &mounts); err != nil {
		t.Fatalf("secrets list: %v\n%s", err, out)
	}
	if m, ok := mounts["oauth/"]; !ok || m.Type != harness.PluginName {
		t.Fatalf("secrets list: want oauth/ of type %s, got %s", harness.PluginName, out)
	}
	if pid := v.PluginPID(t); pid <= 0 {
		t.Fatalf("PluginPID = %d", pid)
	}

	rt, grant := up.Mint(t, harness.DefaultClientID, "offline_access api:read", "smoke")
	if rt == "" || grant == "" {
		t.Fatalf("Mint: refresh token %d bytes, grant %q", len(rt), grant)
	}
	if st := up.Stats(t); st.Raw == nil {
		t.Fatalf("Stats: empty")
	}
	if got := up.Introspect(t, rt); got["active"] != true {
		t.Fatalf("Introspect(minted refresh token): %v", got)
	}
	harness.AssertNoSecretsInLogs(t, v, rt, up.ClientSecret)
}

// TestVaultOptionsAndPluginStats checks what the benchmarks use: a Vault
// without audit device at a quieter log level, and the plugin's RSS and CPU
// time.
func TestVaultOptionsAndPluginStats(t *testing.T) {
	if harness.PluginVersion() == "" || len(harness.PluginSHA256()) != 64 {
		t.Fatalf("PluginVersion %q, PluginSHA256 %q", harness.PluginVersion(), harness.PluginSHA256())
	}
	v := harness.StartVaultWith(t, harness.VaultOptions{NoAudit: true, LogLevel: "warn"})
	if v.PluginSHA256 != harness.PluginSHA256() {
		t.Fatalf("Vault.PluginSHA256 %s, harness.PluginSHA256() %s", v.PluginSHA256, harness.PluginSHA256())
	}

	audits, err := v.Client.Sys().ListAudit()
	if err != nil {
		t.Fatal(err)
	}
	if len(audits) != 0 {
		t.Fatalf("NoAudit: audit devices %v", audits)
	}
	if _, err := os.Stat(v.AuditLogPath); !os.IsNotExist(err) {
		t.Fatalf("NoAudit: audit log %s exists (%v)", v.AuditLogPath, err)
	}

	start := v.PluginCPUTime(t)
	rss := v.PluginRSS(t)
	if rss < 1<<20 || rss > 4<<30 {
		t.Fatalf("PluginRSS = %d bytes", rss)
	}
	// Work the plugin until it has used measurably more CPU (ticks are 10ms).
	var cpu time.Duration
	harness.Eventually(t, 30*time.Second, func() bool {
		for i := 0; i < 20; i++ {
			if _, err := v.Client.Logical().Write("oauth/config", map[string]any{"tidy_interval": fmt.Sprintf("%ds", 60+i)}); err != nil {
				t.Fatalf("write oauth/config: %v", err)
			}
		}
		cpu = v.PluginCPUTime(t)
		return cpu > start
	}, "plugin CPU time stayed at %s", start)
	if cpu%(10*time.Millisecond) != 0 || cpu > time.Minute {
		t.Fatalf("PluginCPUTime = %s", cpu)
	}
	t.Logf("plugin pid %d: RSS %.1f MiB, CPU %s -> %s", v.PluginPID(t), float64(rss)/(1<<20), start, cpu)

	// -log-level=warn: none of the server's routine INFO/DEBUG/TRACE lines.
	log, err := os.ReadFile(v.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, level := range []string{"[INFO]", "[DEBUG]", "[TRACE]"} {
		if strings.Contains(string(log), level) {
			t.Errorf("LogLevel warn: server log has %s lines", level)
		}
	}
	// No audit log to read: only the server log is searched.
	harness.AssertNoSecretsInLogs(t, v, harness.RandomHex(t, 16))
}

// TestVaultKillThenStop checks Kill and the reaping after it: Kill leaves the
// plugin processes alone, and Stop leaves none of them running.
func TestVaultKillThenStop(t *testing.T) {
	v := harness.StartVaultWith(t, harness.VaultOptions{NoAudit: true})
	v.PluginPID(t)
	pids := v.Kill(t)
	if len(pids) == 0 {
		t.Fatalf("Kill: no plugin process was running")
	}
	if !harness.ProcessGone(v.PID()) {
		t.Fatalf("Kill: vault pid %d still running", v.PID())
	}
	v.Stop(t)
	for _, pid := range pids {
		if !harness.ProcessGone(pid) {
			t.Errorf("plugin pid %d still running after Stop", pid)
		}
	}
}

// TestUpstreamRotationGrace checks the upstream's optional rotation grace
// period: within it a rotated refresh token is accepted again (and rotated
// again); after it, reuse detection kills the grant. Without it (the
// default), the first reuse kills the grant.
func TestUpstreamRotationGrace(t *testing.T) {
	refresh := func(up *harness.Upstream, rt string) (int, string) {
		t.Helper()
		form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}
		req, _ := http.NewRequest(http.MethodPost, up.Endpoint(t, "token_endpoint"), strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(up.ClientID, up.ClientSecret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct {
			RefreshToken string `json:"refresh_token"`
			Error        string `json:"error"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&body)
		if resp.StatusCode == http.StatusOK {
			return resp.StatusCode, body.RefreshToken
		}
		return resp.StatusCode, body.Error
	}

	const grace = 2 * time.Second
	up := harness.StartUpstream(t, harness.UpstreamOptions{RotationGrace: grace})
	rt0, grant := up.Mint(t, harness.DefaultClientID, "offline_access api:read", "grace")
	status, rt1 := refresh(up, rt0)
	if status != http.StatusOK {
		t.Fatalf("first refresh: %d %s", status, rt1)
	}
	rotatedAt := time.Now()
	if st := up.TokenState(t, rt0); !st.Consumed || st.GraceUntil < rotatedAt.Add(grace-time.Second).UnixMilli() {
		t.Fatalf("rotated token state %+v", st)
	}
	// Within the grace period: accepted, rotated again; both successors live.
	status, rt2 := refresh(up, rt0)
	if status != http.StatusOK || rt2 == rt1 || rt2 == rt0 {
		t.Fatalf("reuse within the grace period: %d %s", status, rt2)
	}
	if g := up.Grant(t, grant); !g.Found || g.ActiveTokens["RefreshToken"] != 2 {
		t.Fatalf("grant after a grace reuse: %+v", g)
	}
	stats := up.Stats(t)
	if stats.GraceReusesByGrant[grant] != 1 || stats.RotationsByGrant[grant] != 2 || stats.TokenErrors["invalid_grant"] != 0 {
		t.Fatalf("stats after a grace reuse: %+v", stats)
	}
	// The window runs from the first rotation and is not extended by a reuse.
	time.Sleep(time.Until(rotatedAt.Add(grace + 200*time.Millisecond)))
	if status, code := refresh(up, rt0); status != http.StatusBadRequest || code != "invalid_grant" {
		t.Fatalf("reuse after the grace period: %d %s", status, code)
	}
	if g := up.Grant(t, grant); g.Found {
		t.Fatalf("grant alive after a reuse outside the grace period: %+v", g)
	}
	if status, code := refresh(up, rt2); status != http.StatusBadRequest || code != "invalid_grant" {
		t.Fatalf("newest token after reuse detection: %d %s", status, code)
	}

	// Off by default: the first reuse kills the grant.
	strict := harness.StartUpstream(t, harness.UpstreamOptions{})
	rt0, grant = strict.Mint(t, harness.DefaultClientID, "offline_access api:read", "strict")
	if status, _ := refresh(strict, rt0); status != http.StatusOK {
		t.Fatalf("strict: first refresh: %d", status)
	}
	if st := strict.TokenState(t, rt0); st.GraceUntil != 0 {
		t.Fatalf("strict: grace_until %d", st.GraceUntil)
	}
	if status, code := refresh(strict, rt0); status != http.StatusBadRequest || code != "invalid_grant" {
		t.Fatalf("strict: reuse: %d %s", status, code)
	}
	if g := strict.Grant(t, grant); g.Found {
		t.Fatalf("strict: grant alive after reuse: %+v", g)
	}
}
