package cluster

import (
	"fmt"
	"testing"
	"time"

	"github.com/vault-plugin-secrets-oauth/vault-plugin-secrets-oauth/tests/harness"
)

// TestStepDownUnderLoad: the active node steps down gracefully
// (sys/step-down) while 8 readers read creds through all three nodes, at
// an upstream that rotates refresh tokens with reuse detection and no grace
// period. Once with the readers sharing one grant, once with one grant per
// reader. No grant may be burned (Vault and the upstream agree on every
// grant's rotations, and the upstream never saw a refresh token twice),
// and every read that starts after the new active node is known to all
// nodes succeeds. How long reads failed is logged.
func TestStepDownUnderLoad(t *testing.T) {
	up := harness.StartUpstream(t, harness.UpstreamOptions{})
	c := harness.StartCluster(t, harness.ClusterOptions{Upstream: up})

	shared := newGrants(t, c, up, "local", "shared", 1)
	own := newGrants(t, c, up, "local", "own", readers)

	var lastStepDown time.Time
	for _, sc := range []struct {
		name   string
		grants []*grant
		roles  [][]string
	}{
		{"stepdown-shared", shared, repeat([]string{shared[0].role}, readers)},
		{"stepdown-per-reader", own, perReader(own)},
	} {
		lastStepDown = stepDownScenario(t, c, up, sc.name, sc.grants, sc.roles, lastStepDown)
	}

	checkPluginLogs(t, c, true)
	stats := up.Stats(t)
	if n := stats.TokenErrors["invalid_grant"]; n != 0 {
		t.Errorf("the upstream answered invalid_grant %d times: a refresh token was presented twice", n)
	}
}

// stepDownScenario runs one step-down under load and returns when it was.
func stepDownScenario(t *testing.T, c *harness.Cluster, up *harness.Upstream, scenario string, grants []*grant, roles [][]string, previous time.Time) time.Time {
	l := startLoad(t, c, c.Running(), roles)
	l.waitReads(100, 30*time.Second)
	// A node that stepped down does not take the lock again for 10s
	// (Vault's manualStepDownSleepPeriod) even when Raft hands it the
	// leadership: a second step-down within 10s of the first measures
	// that wait, not the engine.
	if wait := time.Until(previous.Add(11 * time.Second)); !previous.IsZero() && wait > 0 {
		time.Sleep(wait)
	}

	stepAt := time.Now()
	old, leader := c.StepDown(t)
	activeAt := time.Now()
	t.Logf("%s: %s stepped down; %s active and known to all nodes after %s", scenario, old, leader, activeAt.Sub(stepAt).Round(time.Millisecond))

	l.waitReads(150, 30*time.Second)
	l.stop()
	s := summarize(l.snapshot(), l.start, time.Time{}, activeAt, nil)

	burned := 0
	for _, g := range grants {
		o := checkGrant(t, leader.Vault.Client, g)
		if !o.working {
			burned++
			t.Errorf("%s: grant %s burned by a graceful step-down: status %s, last_error %q", scenario, g.name, o.status, o.lastError)
			continue
		}
		// Every refresh the engine made is one the upstream made, and
		// none was lost: the stored refresh token is the newest one.
		if o.rotations != int64(o.upRot) {
			t.Errorf("%s: grant %s: rotation_count %d, upstream counted %d rotations", scenario, g.name, o.rotations, o.upRot)
		}
	}
	for _, r := range s.failedAfter {
		t.Errorf("%s: read of %s through %s started %s after the new active node was known and failed: %v",
			scenario, r.role, r.node, r.start.Sub(activeAt).Round(time.Millisecond), r.err)
	}
	t.Logf("%s: %d reads, %d ok, %d failed%s", scenario, s.reads, s.ok, s.failed, s.errorSummary())
	t.Logf("FAILOVER scenario=%s window=%s failed_reads=%d reads=%d leader_after=%s burned=%d/%d",
		scenario, s.window().Round(10*time.Millisecond), s.failed, s.reads, activeAt.Sub(stepAt).Round(10*time.Millisecond), burned, len(grants))
	return stepAt
}

func repeat(roles []string, n int) [][]string {
	out := make([][]string, n)
	for i := range out {
		out[i] = roles
	}
	return out
}

func perReader(gs []*grant) [][]string {
	if len(gs) != readers {
		panic(fmt.Sprintf("perReader: %d grants for %d readers", len(gs), readers))
	}
	out := make([][]string, len(gs))
	for i, g := range gs {
		out[i] = []string{g.role}
	}
	return out
}
