package backend

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// Two indexes keep the engine from reading every grant.

// The grant index answers LIST grants' key_info (provider, status) without
// reading every grant: 256 shards, each a map of name to provider and
// status, written only when a grant is created, changes status or goes.
// A refresh, the hot path, never touches it.
type grantIndexShard map[string]grantIndexEntry

type grantIndexEntry struct {
	Provider string `json:"p"`
	Status   string `json:"s"`
}

// indexGrant records g's provider and status in its shard. It runs before
// the grant itself is stored, so after a crash the index can only be
// ahead, and the next write of the grant puts it right.
func (b *backend) indexGrant(ctx context.Context, s logical.Storage, g *grantEntry) error {
	return b.updateGrantIndex(ctx, s, g.Name, func(shard grantIndexShard) {
		shard[g.Name] = grantIndexEntry{Provider: g.Provider, Status: g.Status}
	})
}

func (b *backend) unindexGrant(ctx context.Context, s logical.Storage, name string) error {
	return b.updateGrantIndex(ctx, s, name, func(shard grantIndexShard) { delete(shard, name) })
}

func (b *backend) updateGrantIndex(ctx context.Context, s logical.Storage, name string, change func(grantIndexShard)) error {
	path := grantIndexPath(name)
	unlock := b.indexLocks.Lock(path)
	defer unlock()
	shard := grantIndexShard{}
	if _, err := getJSON(ctx, s, path, &shard); err != nil {
		return fmt.Errorf("reading grant index: %w", err)
	}
	change(shard)
	if len(shard) == 0 {
		return s.Delete(ctx, path)
	}
	return putJSON(ctx, s, path, shard)
}

// grantsOfProvider names the grants of provider, from the index (and the
// grants themselves for any the index does not know).
func (b *backend) grantsOfProvider(ctx context.Context, s logical.Storage, provider string) ([]string, error) {
	names, err := listGrants(ctx, s)
	if err != nil {
		return nil, err
	}
	info, err := b.grantKeyInfo(ctx, s, names)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, name := range names {
		if e, ok := info[name].(map[string]any); ok && e["provider"] == provider {
			out = append(out, name)
		}
	}
	return out, nil
}

// grantKeyInfo returns key_info for names: from the index, or from the
// grant itself for any name the index does not know.
func (b *backend) grantKeyInfo(ctx context.Context, s logical.Storage, names []string) (map[string]any, error) {
	shards, err := s.List(ctx, grantIndexPrefix)
	if err != nil {
		return nil, err
	}
	index := make(map[string]grantIndexEntry, len(names))
	for _, key := range shards {
		shard := grantIndexShard{}
		if _, err := getJSON(ctx, s, grantIndexPrefix+key, &shard); err != nil {
			return nil, fmt.Errorf("reading grant index: %w", err)
		}
		for name, e := range shard {
			index[name] = e
		}
	}
	info := make(map[string]any, len(names))
	for _, name := range names {
		e, ok := index[name]
		if !ok {
			g, err := getGrant(ctx, s, name)
			if err != nil {
				return nil, err
			}
			if g == nil {
				continue
			}
			e = grantIndexEntry{Provider: g.Provider, Status: g.Status}
		}
		info[name] = map[string]any{"provider": e.Provider, "status": e.Status}
	}
	return info, nil
}

// The due index tells the sweep which grants need background work
// (max_age, idle_timeout, keep_alive) without reading every grant: one
// entry per scheduled grant at due/<minute>/<name>. The sweep lists the
// minutes and opens only those that have come. An entry may fire early
// (a refresh or a use moved the grant's due time later): the sweep then
// checks the grant and schedules it again, so the hot path never writes
// the index.

// nextCheck is when the grant next needs background work; zero if never.
func (g *grantEntry) nextCheck() time.Time {
	if g.Status == statusPending {
		return g.PendingUntil
	}
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
	consider(g.renewDue())
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
	if !next.IsZero() && !old.IsZero() && !old.After(next) && old.After(b.now()) {
		return nil // the entry already fires in time
	}
	if !next.IsZero() {
		if err := putDueEntry(ctx, s, next, g.Name); err != nil {
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
