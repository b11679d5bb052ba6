package harness_test

import (
	"encoding/json"
	"fmt"
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
