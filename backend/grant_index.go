package backend

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"github.com/hashicorp/vault/sdk/logical"
)

// The grant index answers LIST grants' key_info (provider, status) without
// reading every grant: 256 shards, each a map of name to provider and
// status, written only when a grant is created, changes status or goes.
// A refresh, the hot path, never touches it.
const grantIndexPrefix = "index/grants/"

type grantIndexShard map[string]grantIndexEntry

type grantIndexEntry struct {
	Provider string `json:"p"`
	Status   string `json:"s"`
}

func grantIndexPath(name string) string {
	sum := sha256.Sum256([]byte(name))
	return grantIndexPrefix + hex.EncodeToString(sum[:1])
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
