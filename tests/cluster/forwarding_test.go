package cluster

import (
	"encoding/json"
	"testing"

	"github.com/vault-plugin-secrets-oauth/vault-plugin-secrets-oauth/tests/harness"
)

// TestStandbysForwardReadsAndWrites: every node answers the engine's paths.
// Vault OSS standbys forward every request to the active node, the only
// one running the plugin: grants and roles written through a standby,
// creds read through each node, the same grant state seen from each, and
// the same running plugin version reported by each.
func TestStandbysForwardReadsAndWrites(t *testing.T) {
	up := harness.StartUpstream(t, harness.UpstreamOptions{})
	c := harness.StartCluster(t, harness.ClusterOptions{Upstream: up})
	active := c.Active(t)
	standbys := c.Standbys(t)
	if len(standbys) != 2 {
		t.Fatalf("standbys: %v", standbys)
	}

	// Writes through a standby.
	rt, upstreamID := up.Mint(t, up.ClientID, "offline_access api:read", "alice")
	standbys[0].MustCLI(t, "write", "oauth/grants/g", "provider=local", "refresh_token="+rt, "scopes=api:read")
	standbys[1].MustCLI(t, "write", "oauth/roles/r", "grant=g")

	// Reads through every node: each one is a refresh on the active node.
	for _, n := range c.Nodes {
		s, err := n.Vault.Client.Logical().Read("oauth/creds/r")
		if err != nil || s == nil {
			t.Fatalf("creds through %s: %v", n, err)
		}
		token, _ := s.Data["access_token"].(string)
		if info := up.Introspect(t, token); info["active"] != true {
			t.Fatalf("token read through %s introspects as %v", n, info)
		}
		if s.LeaseID == "" {
			t.Fatalf("creds through %s: no lease", n)
		}
		// The lease is renewable through any node too.
		if _, err := n.Vault.Client.Sys().Renew(s.LeaseID, 0); err != nil {
			t.Fatalf("renewing a lease through %s: %v", n, err)
		}
	}
	for _, n := range c.Nodes {
		g := readGrant(t, n.Vault.Client, "g")
		if g["status"] != "active" || jsonInt(g["rotation_count"]) != 3 {
			t.Fatalf("grant g read through %s = %v", n, g)
		}
	}
	if got := up.Stats(t).RotationsByGrant[upstreamID]; got != 3 {
		t.Fatalf("upstream counted %d rotations, want 3", got)
	}

	// The running plugin, as every node reports it.
	for _, n := range c.Nodes {
		m := n.MountInfo(t)
		if m.Type != harness.PluginName || m.RunningPluginVersion != harness.PluginVersion() || m.RunningSHA256 != harness.PluginSHA256() {
			t.Errorf("sys/mounts/oauth through %s = %+v, want version %q sha256 %s", n, m, harness.PluginVersion(), harness.PluginSHA256())
		}
		out := n.MustCLI(t, "secrets", "list", "-detailed", "-format=json")
		var mounts map[string]struct {
			RunningPluginVersion string `json:"running_plugin_version"`
			RunningSHA256        string `json:"running_sha256"`
		}
		if err := json.Unmarshal([]byte(out), &mounts); err != nil {
			t.Fatalf("secrets list through %s: %v", n, err)
		}
		if m := mounts["oauth/"]; m.RunningPluginVersion != harness.PluginVersion() || m.RunningSHA256 != harness.PluginSHA256() {
			t.Errorf("vault secrets list -detailed through %s: oauth/ = %+v", n, m)
		}
	}

	// The plugin runs on the active node only.
	if pids := active.PluginPIDs(); len(pids) == 0 {
		t.Errorf("no plugin process on the active node %s", active)
	}
	for _, n := range standbys {
		if pids := n.PluginPIDs(); len(pids) != 0 {
			t.Logf("note: standby %s runs plugin processes %v", n, pids)
		}
	}
}
