package backend

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-plugin-secrets-oauth/vault-plugin-secrets-oauth/backend/oauthclient"
)

// The due index tells the sweep which grants need background work
// (max_age, idle_timeout, keep_alive) without reading every grant: one
// entry per scheduled grant at due/<minute>/<name>. The sweep lists the
// minutes and opens only those that have come. An entry may fire early
// (a refresh or a use moved the grant's due time later): the sweep then
// checks the grant and schedules it again, so the hot path never writes
// the index.
const duePrefix = "due/"

func dueMinute(t time.Time) string { return fmt.Sprintf("%012d", t.Unix()/60) }

func duePath(t time.Time, name string) string { return duePrefix + dueMinute(t) + "/" + name }

// nextCheck is when the grant next needs background work; zero if never.
func (g *grantEntry) nextCheck() time.Time {
	if g.Status != statusActive {
		return time.Time{}
	}
	var next time.Time
	consider := func(t time.Time) {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	consider(g.expiresAt())
	if g.IdleTimeout > 0 {
		consider(orCreated(g.LastUsedAt, g).Add(g.IdleTimeout))
	}
	if g.KeepAlive > 0 {
		consider(orCreated(g.LastRefreshAt, g).Add(g.KeepAlive))
	}
	return next
}

func orCreated(t time.Time, g *grantEntry) time.Time {
	if t.IsZero() {
		return g.CreatedAt
	}
	return t
}

// schedule makes the due index hold an entry for g no later than its next
// check, and records it in g.DueAt; the caller stores g afterwards and
// holds its lock. The new entry is written before the old one goes, so a
// crash leaves an extra entry, never a missing one.
func (b *backend) schedule(ctx context.Context, s logical.Storage, g *grantEntry) error {
	next := g.nextCheck()
	old := g.DueAt
	if !next.IsZero() && !old.IsZero() && !old.After(next) && old.After(time.Now()) {
		return nil // the entry already fires in time
	}
	if !next.IsZero() {
		if err := s.Put(ctx, &logical.StorageEntry{Key: duePath(next, g.Name)}); err != nil {
			return fmt.Errorf("scheduling grant %q: %w", g.Name, err)
		}
	}
	g.DueAt = next
	if !old.IsZero() && (next.IsZero() || duePath(old, g.Name) != duePath(next, g.Name)) {
		if err := s.Delete(ctx, duePath(old, g.Name)); err != nil {
			return err
		}
	}
	return nil
}

// sweepDue handles every due entry whose minute has come and returns when
// the next one is due (zero if none is scheduled).
func (w *backgroundWorker) sweepDue(ctx context.Context, s logical.Storage, st *tidyStatus) time.Time {
	minutes, err := s.List(ctx, duePrefix)
	if err != nil {
		st.LastError = err.Error()
		return time.Time{}
	}
	sort.Strings(minutes)
	now := time.Now()
	current := dueMinute(now)
	var nextDue time.Time
	for _, m := range minutes {
		minute := strings.TrimSuffix(m, "/")
		if minute > current {
			var start int64
			fmt.Sscanf(minute, "%d", &start)
			nextDue = earliest(nextDue, time.Unix(start*60, 0))
			break
		}
		names, err := s.List(ctx, duePrefix+m)
		if err != nil {
			st.LastError = err.Error()
			continue
		}
		for _, name := range names {
			if ctx.Err() != nil {
				return nextDue
			}
			next, err := w.handleDue(ctx, s, duePrefix+m+name, name)
			st.DueChecked++
			if err != nil {
				st.LastError = err.Error()
			}
			if !next.IsZero() && dueMinute(next) <= current {
				nextDue = earliest(nextDue, next)
			}
		}
	}
	return nextDue
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

// handleDue does a grant's background work if it is due: expire it
// (max_age, idle_timeout) or refresh it (keep_alive). It returns when the
// grant next needs a check.
func (w *backgroundWorker) handleDue(ctx context.Context, s logical.Storage, entryPath, name string) (time.Time, error) {
	b := w.b
	unlock := b.grantLocks.Lock(name)
	g, err := getGrant(ctx, s, name)
	if err != nil {
		unlock()
		return time.Time{}, err
	}
	if g == nil || duePath(g.DueAt, name) != entryPath || g.Status != statusActive {
		// Stale: the grant is gone, was scheduled again, or is no longer
		// active. Only the entry it points to stays.
		unlock()
		return time.Time{}, s.Delete(ctx, entryPath)
	}
	now := time.Now()
	if why := g.lapsed(now); why != "" {
		b.expireGrant(ctx, s, g, why)
		err := s.Delete(ctx, entryPath)
		unlock()
		return time.Time{}, err
	}
	refresh := g.KeepAlive > 0 && !now.Before(orCreated(g.LastRefreshAt, g).Add(g.KeepAlive))
	unlock()

	if refresh {
		if err := b.keepAlive(ctx, s, name); err != nil {
			b.logger.Warn("keep_alive refresh failed; will retry", "grant", name, "error", err)
			return w.retryDue(ctx, s, name, entryPath)
		}
	}
	return w.reschedule(ctx, s, name)
}

// keepAlive refreshes a grant so that an idle refresh token does not lapse
// upstream. The access token it gets goes to nobody: it is revoked where
// that cannot hurt the grant, or left to expire.
func (b *backend) keepAlive(ctx context.Context, s logical.Storage, name string) error {
	r, err := b.refreshGrant(ctx, s, name, refreshRequest{keepAlive: true})
	if err != nil {
		return err
	}
	if r.provider.entry.canRevoke(true) {
		if err := r.provider.client.Revoke(ctx, r.token.AccessToken, oauthclient.HintAccessToken); err != nil {
			b.logger.Debug("revoking keep_alive access token failed", "grant", name, "error", err)
		}
	}
	return nil
}

func (w *backgroundWorker) reschedule(ctx context.Context, s logical.Storage, name string) (time.Time, error) {
	b := w.b
	unlock := b.grantLocks.Lock(name)
	defer unlock()
	g, err := getGrant(ctx, s, name)
	if err != nil || g == nil {
		return time.Time{}, err
	}
	g.DueAt = time.Time{} // the entry that fired is used up
	if err := b.schedule(ctx, s, g); err != nil {
		return time.Time{}, err
	}
	return g.DueAt, b.putGrant(ctx, s, g)
}

// retryDue moves a failed keep_alive a minute on; the grant itself is left
// as the refresh left it (invalid only on invalid_grant).
func (w *backgroundWorker) retryDue(ctx context.Context, s logical.Storage, name, entryPath string) (time.Time, error) {
	b := w.b
	unlock := b.grantLocks.Lock(name)
	defer unlock()
	g, err := getGrant(ctx, s, name)
	if err != nil || g == nil || g.Status != statusActive {
		return time.Time{}, err
	}
	retry := time.Now().Add(time.Minute)
	if err := s.Put(ctx, &logical.StorageEntry{Key: duePath(retry, name)}); err != nil {
		return time.Time{}, err
	}
	g.DueAt = retry
	if err := b.putGrant(ctx, s, g); err != nil {
		return time.Time{}, err
	}
	if duePath(retry, name) != entryPath {
		return retry, s.Delete(ctx, entryPath)
	}
	return retry, nil
}
