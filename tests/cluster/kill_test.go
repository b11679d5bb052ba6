package cluster

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/vault-plugin-secrets-oauth/vault-plugin-secrets-oauth/tests/harness"
)

const (
	killTrials = 3
	// killBudget bounds the trials: no new one starts after it.
	killBudget = 150 * time.Second
	// rotationGrace of the "grace" upstream: long enough for a new leader
	// to be elected and to retry an interrupted refresh on a loaded machine.
	rotationGrace = 30 * time.Second
	// interruptedRefresh is how the engine's last_error starts when a
	// refresh died after sending the token and the stored one was then
	// refused (backend/refresh.go, interruptedRefreshHelp).
	interruptedRefresh = "a refresh was interrupted"
)

// TestKillActiveUnderLoad: the active node is SIGKILLed (a crash, the OOM
// killer) while 8 readers read creds through the standbys. Half of the
// grants are at an upstream with a refresh-token rotation grace period
// (30s), half at one without. A refresh under way on the killed node has
// sent the refresh token and lost the new one with the process:
//
//   - with a grace period, the engine's retry of the stored token is
//     accepted, and no grant may be burned;
//   - without one, the stored token is refused: every grant must either
//     work or be invalid with a last_error that names the interrupted
//     refresh. How many of the trials burned a grant is logged.
//
// Each trial uses new grants: one shared by four readers and one per
// reader, at each upstream; the killed node is restarted before the next.
func TestKillActiveUnderLoad(t *testing.T) {
	upGrace := harness.StartUpstream(t, harness.UpstreamOptions{RotationGrace: rotationGrace})
	upStrict := harness.StartUpstream(t, harness.UpstreamOptions{})
	c := harness.StartCluster(t, harness.ClusterOptions{Upstream: upStrict})
	c.ConfigureProvider(t, upGrace, "grace")
	c.ConfigureProvider(t, upStrict, "strict")
	start := time.Now()

	trialsRun, trialsBurned, burnedTotal, strictTotal := 0, 0, 0, 0
	for trial := 1; trial <= killTrials; trial++ {
		if trial > 1 && time.Since(start) > killBudget {
			t.Logf("kill: %d of %d trials run within %s; skipping the rest", trialsRun, killTrials, killBudget)
			break
		}
		trialsRun++
		burned := killTrial(t, c, upGrace, upStrict, trial)
		strictTotal += 1 + readers/2
		burnedTotal += burned
		if burned > 0 {
			trialsBurned++
		}
	}
	checkPluginLogs(t, c, false)
	if n := upGrace.Stats(t).TokenErrors["invalid_grant"]; n != 0 {
		t.Errorf("the grace upstream answered invalid_grant %d times", n)
	}
	t.Logf("FAILOVER scenario=kill-nograce trials=%d trials_with_burned=%d burned=%d/%d",
		trialsRun, trialsBurned, burnedTotal, strictTotal)
}

// killTrial runs one SIGKILL under load and returns how many grants at
// the upstream without a grace period were burned.
func killTrial(t *testing.T, c *harness.Cluster, upGrace, upStrict *harness.Upstream, trial int) int {
	half := readers / 2
	graceShared := newGrants(t, c, upGrace, "grace", fmt.Sprintf("t%d-grace-shared", trial), 1)[0]
	graceOwn := newGrants(t, c, upGrace, "grace", fmt.Sprintf("t%d-grace-own", trial), half)
	strictShared := newGrants(t, c, upStrict, "strict", fmt.Sprintf("t%d-strict-shared", trial), 1)[0]
	strictOwn := newGrants(t, c, upStrict, "strict", fmt.Sprintf("t%d-strict-own", trial), half)
	roles := make([][]string, readers)
	for i := 0; i < half; i++ {
		roles[i] = []string{graceShared.role, graceOwn[i].role}
		roles[half+i] = []string{strictShared.role, strictOwn[i].role}
	}
	graceGrants := append([]*grant{graceShared}, graceOwn...)
	strictGrants := append([]*grant{strictShared}, strictOwn...)

	old := c.Active(t)
	l := startLoad(t, c, c.Standbys(t), roles)
	l.waitReads(150, 30*time.Second)

	killedAt := time.Now()
	pids := old.Kill(t)
	leader := c.WaitForLeader(t, old, 90*time.Second)
	activeAt := time.Now()
	t.Logf("kill trial %d: %s SIGKILLed (plugin pids %v left to exit by themselves); %s active and known to all nodes %s later",
		trial, old, pids, leader, activeAt.Sub(killedAt).Round(time.Millisecond))
	l.waitReads(150, 30*time.Second)
	l.stop()
	results := l.snapshot()

	// What became of each grant.
	client := leader.Vault.Client
	rescued := 0
	for _, g := range graceGrants {
		o := checkGrant(t, client, g)
		rescued += o.upGrace
		if !o.working {
			t.Errorf("kill trial %d: grant %s at the upstream WITH a %s grace period burned: status %s, last_error %q",
				trial, g.name, rotationGrace, o.status, o.lastError)
			continue
		}
		// Every rotation the engine lost is followed by exactly one
		// grace reuse of the stored token.
		if o.rotations != int64(o.upRot-o.upGrace) {
			t.Errorf("kill trial %d: grant %s: rotation_count %d, the upstream counted %d rotations of which %d grace reuses",
				trial, g.name, o.rotations, o.upRot, o.upGrace)
		}
	}
	burnedRoles := map[string]bool{}
	burned := 0
	for _, g := range strictGrants {
		o := checkGrant(t, client, g)
		switch {
		case o.working:
			if o.rotations != int64(o.upRot) {
				t.Errorf("kill trial %d: grant %s: rotation_count %d, the upstream counted %d rotations", trial, g.name, o.rotations, o.upRot)
			}
		case o.burned:
			burned++
			burnedRoles[g.role] = true
			if !strings.Contains(o.lastError, interruptedRefresh) {
				t.Errorf("kill trial %d: grant %s is invalid with last_error %q, which does not name the interrupted refresh (%q)",
					trial, g.name, o.lastError, interruptedRefresh)
			}
			if up := g.up.Grant(t, g.upstreamID); up.Found {
				t.Errorf("kill trial %d: grant %s is invalid in Vault but alive upstream: %+v", trial, g.name, up)
			}
			t.Logf("kill trial %d: grant %s burned: %s", trial, g.name, o.lastError)
		}
	}

	// Reads after the new active node was known: only those of a burned
	// grant, refused as invalid, may fail.
	refusedBurned := func(r readResult) bool {
		return burnedRoles[r.role] && strings.Contains(r.err.Error(), "is invalid")
	}
	for name, gs := range map[string][]*grant{"kill-grace": graceGrants, "kill-nograce": strictGrants} {
		s := summarize(rolesOnly(results, gs), l.start, time.Time{}, activeAt, refusedBurned)
		for _, r := range s.failedAfter {
			t.Errorf("kill trial %d: read of %s through %s started %s after the new active node was known and failed: %v",
				trial, r.role, r.node, r.start.Sub(activeAt).Round(time.Millisecond), r.err)
		}
		t.Logf("kill trial %d (%s): %d reads, %d ok, %d failed%s", trial, name, s.reads, s.ok, s.failed, s.errorSummary())
		line := fmt.Sprintf("FAILOVER scenario=%s trial=%d window=%s failed_reads=%d reads=%d leader_after=%s",
			name, trial, s.window().Round(10*time.Millisecond), s.failed, s.reads, activeAt.Sub(killedAt).Round(10*time.Millisecond))
		if name == "kill-grace" {
			t.Logf("%s burned=0/%d rescued_by_grace=%d", line, len(gs), rescued)
		} else {
			t.Logf("%s burned=%d/%d", line, burned, len(gs))
		}
	}

	// The killed node comes back (its plugin processes reaped) before the
	// next trial.
	old.Restart(t)
	c.WaitHealthy(t, 90*time.Second)
	for _, pid := range pids {
		if !harness.ProcessGone(pid) {
			t.Errorf("plugin pid %d of the killed node still running after its restart", pid)
		}
	}
	return burned
}

// rolesOnly keeps the reads of the roles of gs.
func rolesOnly(rs []readResult, gs []*grant) []readResult {
	keep := map[string]bool{}
	for _, g := range gs {
		keep[g.role] = true
	}
	var out []readResult
	for _, r := range rs {
		if keep[r.role] {
			out = append(out, r)
		}
	}
	return out
}
