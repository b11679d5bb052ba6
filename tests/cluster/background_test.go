package cluster

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vault-plugin-secrets-oauth/vault-plugin-secrets-oauth/tests/harness"
)

const deviceGrantType = "urn:ietf:params:oauth:grant-type:device_code"

// TestBackgroundWorkMovesWithLeadership: the engine's background work runs
// on the active node only, and moves with it. Three pieces of work are
// under way when the active node is SIGKILLed:
//
//   - a grant deleted while its provider was down, left "revoking";
//   - a keep_alive grant whose first background refresh is due after the
//     kill;
//   - a device flow the engine is polling, approved by the user after the
//     kill.
//
// All three must finish on the new active node, and nothing may run twice:
// the upstream sees the deleted grant's refresh token revoked once, the
// device code redeemed once, and no refresh token presented twice; the
// killed node rejoining changes none of that.
func TestBackgroundWorkMovesWithLeadership(t *testing.T) {
	up := harness.StartUpstream(t, harness.UpstreamOptions{})
	upDown := harness.StartUpstream(t, harness.UpstreamOptions{StateFile: t.TempDir() + "/down-state.json"})
	c := harness.StartCluster(t, harness.ClusterOptions{Upstream: up})
	c.ConfigureProvider(t, upDown, "down")

	// The grant to delete, at the upstream that goes down.
	doomedRT, doomedID := c.ImportGrant(t, upDown, "down", "doomed", "api:read")

	// A device flow, polled by the active node.
	out := c.MustCLI(t, "write", "-format=json", "oauth/grants/tv/device", "provider=local", "scopes=offline_access,api:read")
	var started struct {
		Data map[string]any `json:"data"`
	}
	if err := json.Unmarshal([]byte(out), &started); err != nil {
		t.Fatalf("device: %v\n%s", err, out)
	}
	userCode, _ := started.Data["user_code"].(string)
	verification, _ := started.Data["verification_uri"].(string)
	if userCode == "" || verification == "" {
		t.Fatalf("device: %s", out)
	}

	// The provider goes down; the delete is queued as a revocation.
	upDown.Stop(t)
	out = c.MustCLI(t, "delete", "oauth/grants/doomed")
	t.Logf("delete with the provider down said: %s", strings.TrimSpace(out))
	old := c.Active(t)
	if g := readGrant(t, old.Vault.Client, "doomed"); g == nil || g["status"] != "revoking" {
		t.Fatalf("grant doomed = %v, want status revoking", g)
	}

	// The keep_alive grant: its first background refresh is due 15s after
	// its import, after the kill.
	const keepAlive = 15 * time.Second
	_, aliveID := c.ImportGrant(t, up, "local", "alive", "api:read", "keep_alive=15s")
	aliveAt := time.Now()

	// The old active node is working on both: it polls the device code and
	// retries the revocation.
	harness.Eventually(t, 30*time.Second, func() bool {
		return up.Stats(t).TokenErrors["authorization_pending"] > 0
	}, "the active node never polled the device code")
	harness.Eventually(t, 30*time.Second, func() bool {
		s, err := old.Vault.Client.Logical().Read("oauth/tidy/status")
		return err == nil && s != nil && jsonInt(s.Data["revocations_failed"]) > 0
	}, "the active node never tried the queued revocation")

	killedAt := time.Now()
	pids := old.Kill(t)
	leader := c.WaitForLeader(t, old, 90*time.Second)
	leaderAfter := time.Since(killedAt)
	t.Logf("%s SIGKILLed %s after the keep_alive grant's import; %s active and known to all nodes %s later",
		old, killedAt.Sub(aliveAt).Round(time.Millisecond), leader, leaderAfter.Round(time.Millisecond))
	if time.Since(aliveAt) > keepAlive-2*time.Second {
		t.Fatalf("the new leader came %s after the keep_alive grant's import: its refresh may have been due on the old node", time.Since(aliveAt))
	}
	client := leader.Vault.Client

	// The provider is back; the user approves the device.
	upDown.Restart(t)
	harness.ApproveDevice(t, verification, userCode, "alice")

	var doomedGone, tvActive, aliveRefreshed bool
	var doomedAt, tvAt, aliveRefreshAt time.Duration // after the kill
	deadline := time.Now().Add(90 * time.Second)
	for !(doomedGone && tvActive && aliveRefreshed) {
		if time.Now().After(deadline) {
			t.Fatalf("after 90s on %s: doomed erased %v, tv active %v, alive refreshed %v (doomed %v, tv %v, alive %v)",
				leader, doomedGone, tvActive, aliveRefreshed,
				readGrant(t, client, "doomed"), readGrant(t, client, "tv"), readGrant(t, client, "alive"))
		}
		time.Sleep(200 * time.Millisecond)
		mark := func(done *bool, at *time.Duration, now bool) {
			if now && !*done {
				*done, *at = true, time.Since(killedAt)
			}
		}
		mark(&doomedGone, &doomedAt, readGrant(t, client, "doomed") == nil)
		mark(&tvActive, &tvAt, readGrant(t, client, "tv")["status"] == "active")
		mark(&aliveRefreshed, &aliveRefreshAt, jsonInt(readGrant(t, client, "alive")["refresh_count"]) >= 1)
	}
	t.Logf("background work done on %s after the kill: revocation %s, device flow %s, keep_alive refresh %s (due %s)",
		leader, doomedAt.Round(time.Millisecond), tvAt.Round(time.Millisecond), aliveRefreshAt.Round(time.Millisecond),
		aliveAt.Add(keepAlive).Sub(killedAt).Round(time.Millisecond))
	for _, pid := range pids {
		if !harness.ProcessGone(pid) {
			t.Errorf("plugin pid %d of the killed node still running", pid)
		}
	}

	check := func(when string) {
		t.Helper()
		// The deleted grant: revoked upstream once.
		revocations := 0
		for _, r := range upDown.Stats(t).Revocations {
			if r.GrantID == doomedID && r.TokenTypeHint == "refresh_token" {
				revocations++
				if r.Status != http.StatusOK {
					t.Errorf("%s: revocation of doomed's refresh token answered %d", when, r.Status)
				}
			}
		}
		if revocations != 1 {
			t.Errorf("%s: the upstream saw doomed's refresh token revoked %d times, want once", when, revocations)
		}
		if st := upDown.TokenState(t, doomedRT); st.Active {
			t.Errorf("%s: doomed's refresh token still active upstream: %+v", when, st)
		}
		// The device code: redeemed once.
		stats := up.Stats(t)
		redeemed := stats.TokenRequests[deviceGrantType] - stats.TokenErrors["authorization_pending"]
		if redeemed != 1 {
			t.Errorf("%s: device code requests %d, authorization_pending %d: redeemed %d times, want once",
				when, stats.TokenRequests[deviceGrantType], stats.TokenErrors["authorization_pending"], redeemed)
		}
		for code, n := range stats.TokenErrors {
			if code != "authorization_pending" {
				t.Errorf("%s: the upstream answered %s %d times", when, code, n)
			}
		}
		// The keep_alive grant: refreshed on the new node, never twice
		// with the same token.
		g := readGrant(t, client, "alive")
		if g["status"] != "active" || g["last_used_at"] != "" {
			t.Errorf("%s: alive = %v", when, g)
		}
		if last, err := time.Parse(time.RFC3339Nano, g["last_refresh_at"].(string)); err != nil || !last.After(killedAt) {
			t.Errorf("%s: alive last refreshed at %v (%v), before the kill at %s", when, g["last_refresh_at"], err, killedAt.UTC())
		}
		if rot, upRot, upRef := jsonInt(g["rotation_count"]), stats.RotationsByGrant[aliveID], stats.RefreshesByGrant[aliveID]; rot != int64(upRot) || upRef != upRot {
			t.Errorf("%s: alive rotation_count %d; upstream: %d refresh requests, %d rotations", when, rot, upRef, upRot)
		}
	}
	check("after the failover")

	// The killed node rejoins as a standby: no work runs there, and the
	// new active node keeps doing the keep_alive refreshes.
	old.Restart(t)
	c.WaitHealthy(t, 90*time.Second)
	if a := c.Active(t); a != leader {
		t.Fatalf("leadership moved again, to %s", a)
	}
	before := jsonInt(readGrant(t, client, "alive")["refresh_count"])
	harness.Eventually(t, 2*keepAlive+30*time.Second, func() bool {
		return jsonInt(readGrant(t, client, "alive")["refresh_count"]) > before
	}, "no keep_alive refresh after the old node rejoined")
	check("after the killed node rejoined")
	if pids := old.PluginPIDs(); len(pids) != 0 {
		t.Errorf("the rejoined standby %s runs plugin processes %v", old, pids)
	}
	if !t.Failed() {
		t.Logf("FAILOVER scenario=background-work leader_after=%s revoked_after=%s device_done_after=%s keep_alive_after=%s revocations=1 device_redemptions=1 burned=0/2",
			leaderAfter.Round(10*time.Millisecond), doomedAt.Round(10*time.Millisecond), tvAt.Round(10*time.Millisecond), aliveRefreshAt.Round(10*time.Millisecond))
	}
	checkPluginLogs(t, c, false)
	for _, name := range []string{"tv", "alive"} {
		c.MustCLI(t, "write", "oauth/roles/"+name, "grant="+name)
		if _, err := readCreds(client, name); err != nil {
			t.Errorf("creds of %s after the failover: %v", name, err)
		}
	}
}
