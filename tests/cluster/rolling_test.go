package cluster

import (
	"testing"
	"time"

	"github.com/vault-plugin-secrets-oauth/vault-plugin-secrets-oauth/tests/harness"
)

// TestRollingRestartUnderLoad: each node in turn is stopped with SIGTERM
// (Vault steps down, seals and stops its plugins itself), started again
// and unsealed, while 8 readers read creds through the running nodes, each
// alternating between one grant all of them share and a grant of its own,
// at an upstream without a rotation grace period. No grant may be burned,
// and every grant's rotation_count must equal the upstream's count of
// rotations for it: no refresh was lost and none was made twice.
func TestRollingRestartUnderLoad(t *testing.T) {
	up := harness.StartUpstream(t, harness.UpstreamOptions{})
	c := harness.StartCluster(t, harness.ClusterOptions{Upstream: up})

	shared := newGrants(t, c, up, "local", "shared", 1)[0]
	own := newGrants(t, c, up, "local", "own", readers)
	roles := make([][]string, readers)
	for i := range roles {
		roles[i] = []string{shared.role, own[i].role}
	}
	l := startLoad(t, c, c.Running(), roles)
	l.waitReads(100, 30*time.Second)

	var worst time.Duration
	for _, n := range c.Nodes {
		wasActive := n == c.Active(t)
		role := "standby"
		if wasActive {
			role = "active"
		}
		l.markDown(n)
		stepStart := time.Now()
		n.Stop(t)
		stopped := time.Now()
		activeAt := stopped
		if wasActive {
			leader := c.WaitForLeader(t, n, 60*time.Second)
			activeAt = time.Now()
			t.Logf("rolling restart: %s stopped in %s; %s active and known to all nodes %s later",
				n, stopped.Sub(stepStart).Round(time.Millisecond), leader, activeAt.Sub(stopped).Round(time.Millisecond))
		}
		restartAt := time.Now()
		n.Restart(t)
		unsealed := time.Now()
		c.WaitHealthy(t, 90*time.Second)
		t.Logf("rolling restart: %s started and unsealed in %s, healthy (voter, caught up) %s later",
			n, unsealed.Sub(restartAt).Round(time.Millisecond), time.Since(unsealed).Round(time.Millisecond))
		l.markUp(n)
		l.waitReads(100, 30*time.Second)

		s := summarize(l.snapshot(), stepStart, time.Time{}, activeAt, nil)
		for _, r := range s.failedAfter {
			t.Errorf("rolling restart of %s (%s): read of %s through %s started %s after the cluster had an active node known to all and failed: %v",
				n.Name, role, r.role, r.node, r.start.Sub(activeAt).Round(time.Millisecond), r.err)
		}
		if s.failed > 0 {
			t.Logf("rolling restart of %s (%s): %d reads, %d failed, %d to the stopped node%s", n.Name, role, s.reads, s.failed, s.nodeDown, s.errorSummary())
		}
		worst = max(worst, s.window())
		t.Logf("FAILOVER scenario=rolling-restart step=%s(%s) window=%s failed_reads=%d reads=%d stop=%s",
			n.Name, role, s.window().Round(10*time.Millisecond), s.failed, s.reads, stopped.Sub(stepStart).Round(10*time.Millisecond))
	}
	l.stop()

	all := append([]*grant{shared}, own...)
	burned := 0
	client := c.Active(t).Vault.Client
	for _, g := range all {
		o := checkGrant(t, client, g)
		if !o.working {
			burned++
			t.Errorf("grant %s burned by a rolling restart: status %s, last_error %q", g.name, o.status, o.lastError)
			continue
		}
		if o.rotations != int64(o.upRot) {
			t.Errorf("grant %s: rotation_count %d, the upstream counted %d rotations", g.name, o.rotations, o.upRot)
		}
	}
	checkPluginLogs(t, c, true)
	if n := up.Stats(t).TokenErrors["invalid_grant"]; n != 0 {
		t.Errorf("the upstream answered invalid_grant %d times: a refresh token was presented twice", n)
	}
	s := summarize(l.snapshot(), l.start, time.Time{}, time.Time{}, nil)
	t.Logf("rolling restart: %d reads, %d ok, %d failed, %d to a stopped node", s.reads, s.ok, s.failed, s.nodeDown)
	t.Logf("FAILOVER scenario=rolling-restart window=%s failed_reads=%d reads=%d burned=%d/%d",
		worst.Round(10*time.Millisecond), s.failed, s.reads, burned, len(all))
}
