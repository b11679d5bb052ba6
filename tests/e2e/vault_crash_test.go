package e2e

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vault-plugin-secrets-oauth/vault-plugin-secrets-oauth/tests/harness"
)

// TestPluginExitsWhenVaultKilled: a Vault that dies without stopping its
// plugins (SIGKILL, the OOM killer) must not leave the plugin process running,
// reparented to init with the mount's keyring and the provider's client
// secret in memory.
func TestPluginExitsWhenVaultKilled(t *testing.T) {
	const limit = 2 * time.Second

	e := startEngine(t, harness.UpstreamOptions{})
	if _, err := e.v.Client.Logical().Read("oauth/providers/local"); err != nil {
		t.Fatalf("read provider: %v", err)
	}
	e.v.PluginPID(t) // waits until one runs

	killed := time.Now()
	pids := e.v.Kill(t)
	if len(pids) == 0 {
		t.Fatalf("no plugin process was running when Vault was killed")
	}

	running := make(map[int]bool)
	for _, pid := range pids {
		running[pid] = true
	}
	for len(running) > 0 && time.Since(killed) < limit {
		for pid := range running {
			if harness.ProcessGone(pid) {
				t.Logf("plugin pid %d exited %dms after Vault was SIGKILLed", pid, time.Since(killed).Milliseconds())
				delete(running, pid)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	for pid := range running {
		t.Errorf("plugin pid %d still running %s after Vault was SIGKILLed: %s", pid, limit, procStat(pid))
	}
}

// procStat is /proc/PID/stat up to the ppid field, e.g. "1234 (vault-plugin-s) S 1".
func procStat(pid int) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return err.Error()
	}
	f := strings.Fields(string(data))
	return strings.Join(f[:min(4, len(f))], " ")
}
