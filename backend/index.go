package backend

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// Two indexes keep the engine from reading every grant.

// The grant index answers LIST grants (key_info and its filters) without
// reading every grant: 256 shards, each a map of name to the grant's
// inventory. It is written when a grant is created, goes, or changes
// provider, status, owner or expiry; on the hot path (a creds read) only
// when last_used_at, or an expiry that slides with every rotation, moved
// by indexUseStep since the indexed value: at most one index write per
// grant an hour. active_leases is as of the last write. So last_used_at,
// a sliding expires_at and active_leases lag the grant by up to
// indexUseStep.
type grantIndexShard map[string]grantIndexEntry

// grantIndexEntry keeps short keys: 100,000 grants live in 256 shards.
type grantIndexEntry struct {
	Provider string `json:"p"`
	Status   string `json:"s"`
	Owner    string `json:"o,omitempty"`
	// ExpiresAt, LastUsed (the creation time until the first use) and
	// Leases; Version 0 marks an entry written before they existed.
	ExpiresAt int64 `json:"e,omitempty"`
	LastUsed  int64 `json:"u,omitempty"`
	Leases    int64 `json:"l,omitempty"`
	Version   int   `json:"v,omitempty"`
}

// indexUseStep bounds how far what moves with every use (last_used_at, a
// sliding expires_at) may lag in the index.
const indexUseStep = time.Hour

const indexVersion = 1

// indexEntryOf is what the index should hold for g.
func indexEntryOf(g *grantEntry) grantIndexEntry {
	e := grantIndexEntry{Provider: g.Provider, Status: g.Status, Owner: g.OwnerEntityID,
		LastUsed: orCreated(g.LastUsedAt, g).Unix(), Leases: g.ActiveLeases, Version: indexVersion}
	if exp := g.shownExpiry(); !exp.IsZero() {
		e.ExpiresAt = exp.Unix()
	}
	return e
}

// needsIndexing says whether cur must replace g.Index, the entry last
// written for g. What the filters match exactly changes rarely and is
// written at once; what moves with every use is written once it moved by
// indexUseStep, so the hot path writes the index at most once an hour.
func (g *grantEntry) needsIndexing(cur grantIndexEntry) bool {
	old, step := g.Index, int64(indexUseStep/time.Second)
	if old.Version != cur.Version || old.Provider != cur.Provider || old.Status != cur.Status || old.Owner != cur.Owner {
		return true
	}
	if cur.LastUsed-old.LastUsed >= step {
		return true
	}
	if old.ExpiresAt == cur.ExpiresAt {
		return false
	}
	// A refresh token given a new lifetime on every rotation
	// (refresh_token_expires_in) moves expires_at later on every use: the
	// index may show it up to a step early, never late.
	sliding := old.ExpiresAt != 0 && cur.ExpiresAt > old.ExpiresAt &&
		!g.RefreshExpiresAt.IsZero() && cur.ExpiresAt == g.RefreshExpiresAt.Unix()
	return !sliding || cur.ExpiresAt-old.ExpiresAt >= step
}

// indexGrant records g's inventory in its shard. It runs before the grant
// itself is stored, so after a crash the index can only be ahead, and the
// next write of the grant puts it right.
func (b *backend) indexGrant(ctx context.Context, s logical.Storage, g *grantEntry, e grantIndexEntry) error {
	return b.updateGrantIndex(ctx, s, g.Name, func(shard grantIndexShard) {
		shard[g.Name] = e
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
	names, _, err := b.inventory(ctx, s, grantFilter{provider: provider})
	return names, err
}

// grantFilter selects grants by what the index holds; zero values match
// every grant.
type grantFilter struct {
	status, provider, owner string
	// unusedSince: last used (or created, if never used) before it.
	unusedSince time.Time
}

func (f grantFilter) matches(e grantIndexEntry) bool {
	return (f.status == "" || e.Status == f.status) && (f.provider == "" || e.Provider == f.provider) &&
		(f.owner == "" || e.Owner == f.owner) && (f.unusedSince.IsZero() || e.LastUsed < f.unusedSince.Unix())
}

// inventory lists the grants that match f with their index entries. It
// reads the 256 index shards, not the grants; a grant the index does not
// know (or knows from before the entry had every field) is read once.
func (b *backend) inventory(ctx context.Context, s logical.Storage, f grantFilter) ([]string, map[string]grantIndexEntry, error) {
	names, err := listGrants(ctx, s)
	if err != nil {
		return nil, nil, err
	}
	shards, err := s.List(ctx, grantIndexPrefix)
	if err != nil {
		return nil, nil, err
	}
	index := make(map[string]grantIndexEntry, len(names))
	for _, key := range shards {
		shard := grantIndexShard{}
		if _, err := getJSON(ctx, s, grantIndexPrefix+key, &shard); err != nil {
			return nil, nil, fmt.Errorf("reading grant index: %w", err)
		}
		for name, e := range shard {
			index[name] = e
		}
	}
	var out []string
	entries := make(map[string]grantIndexEntry)
	for _, name := range names {
		e, ok := index[name]
		if !ok || e.Version != indexVersion {
			g, err := getGrant(ctx, s, name)
			if err != nil {
				return nil, nil, err
			}
			if g == nil {
				continue
			}
			e = indexEntryOf(g)
		}
		if f.matches(e) {
			out = append(out, name)
			entries[name] = e
		}
	}
	return out, entries, nil
}

// grantKeyInfo is LIST grants' key_info for the entries of inventory.
func grantKeyInfo(entries map[string]grantIndexEntry) map[string]any {
	info := make(map[string]any, len(entries))
	for name, e := range entries {
		info[name] = map[string]any{
			"provider":        e.Provider,
			"status":          e.Status,
			"owner_entity_id": e.Owner,
			"last_used_at":    unixTime(e.LastUsed),
			"expires_at":      unixTime(e.ExpiresAt),
			"active_leases":   e.Leases,
		}
	}
	return info
}

func unixTime(secs int64) string {
	if secs == 0 {
		return ""
	}
	return formatTime(time.Unix(secs, 0))
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
