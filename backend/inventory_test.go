package backend

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

func (e *testEnv) list(path string, data map[string]any) ([]string, map[string]any) {
	e.t.Helper()
	resp, err := e.do(logical.ListOperation, path, data)
	if err != nil || resp == nil || resp.IsError() {
		e.t.Fatalf("list %s %v: %v %v", path, data, resp, err)
	}
	keys, _ := resp.Data["keys"].([]string)
	info, _ := resp.Data["key_info"].(map[string]any)
	return keys, info
}

func TestGrantInventoryFilters(t *testing.T) {
	env := newTestEnv(t)
	env.mustWrite("providers/other", map[string]any{"token_url": env.up.URL + "/token", "client_id": "c", "client_secret": "s"})
	env.mustWrite("grants/used", map[string]any{"provider": "up", "refresh_token": env.up.mint("read")})
	env.mustWrite("grants/refused", map[string]any{"provider": "up", "refresh_token": "never-issued"})
	env.mustWrite("grants/elsewhere", map[string]any{"provider": "other", "refresh_token": "rt-x", "max_age": "24h"})
	env.mustWrite("roles/used", map[string]any{"grant": "used"})
	env.mustWrite("roles/refused", map[string]any{"grant": "refused"})
	created := env.clock.Now()
	if _, err := env.creds("refused"); statusOf(err) != 400 {
		t.Fatalf("creds of a refused grant: %v", err)
	}
	env.clock.Advance(2 * time.Hour)
	if _, err := env.creds("used"); err != nil {
		t.Fatal(err)
	}
	usedAt := env.clock.Now()

	for _, tc := range []struct {
		filter map[string]any
		want   []string
	}{
		{nil, []string{"elsewhere", "refused", "used"}},
		{map[string]any{"status": "invalid"}, []string{"refused"}},
		{map[string]any{"status": "active"}, []string{"elsewhere", "used"}},
		{map[string]any{"provider": "other"}, []string{"elsewhere"}},
		{map[string]any{"provider": "up", "status": "active"}, []string{"used"}},
		{map[string]any{"unused_for": "1h"}, []string{"elsewhere", "refused"}},
		{map[string]any{"unused_for": "3h"}, nil},
		{map[string]any{"owner_entity_id": "nobody"}, nil},
	} {
		keys, info := env.list("grants/", tc.filter)
		if !slices.Equal(keys, tc.want) {
			t.Errorf("LIST grants %v = %v, want %v", tc.filter, keys, tc.want)
		}
		if len(info) != len(keys) {
			t.Errorf("LIST grants %v: key_info for %d of %d keys", tc.filter, len(info), len(keys))
		}
	}
	_, info := env.list("grants/", nil)
	used := info["used"].(map[string]any)
	if used["last_used_at"] != formatTime(usedAt) || used["active_leases"] != int64(1) || used["status"] != statusActive || used["provider"] != "up" {
		t.Errorf("key_info of used = %v", used)
	}
	elsewhere := info["elsewhere"].(map[string]any)
	if elsewhere["expires_at"] != formatTime(created.Add(24*time.Hour)) || elsewhere["last_used_at"] != formatTime(created) || elsewhere["active_leases"] != int64(0) {
		t.Errorf("key_info of elsewhere = %v (created %v)", elsewhere, created)
	}
	if resp, err := env.do(logical.ListOperation, "grants/", map[string]any{"status": "revoked"}); err == nil && !resp.IsError() {
		t.Error("LIST with an unknown status was accepted")
	}
}

// owner_entity_id finds what an entity owns (offboarding), and follows an
// owner change at once.
func TestGrantInventoryOwnerFilter(t *testing.T) {
	env := newTestEnv(t)
	for _, name := range []string{"a1", "a2"} {
		resp, err := env.b.HandleRequest(context.Background(), &logical.Request{
			Operation: logical.CreateOperation, Path: "grants/" + name, Storage: env.storage, EntityID: "entity-alice",
			Data: map[string]any{"provider": "up", "refresh_token": env.up.mint("read")},
		})
		if err != nil || resp.IsError() {
			t.Fatalf("create %s: %v %v", name, resp, err)
		}
	}
	env.mustWrite("grants/unowned", map[string]any{"provider": "up", "refresh_token": env.up.mint("read")})
	keys, info := env.list("grants/", map[string]any{"owner_entity_id": "entity-alice"})
	if !slices.Equal(keys, []string{"a1", "a2"}) || info["a1"].(map[string]any)["owner_entity_id"] != "entity-alice" {
		t.Fatalf("LIST owner_entity_id=entity-alice = %v %v", keys, info)
	}
	env.mustWrite("grants/a2", map[string]any{"owner_entity_id": "", "change_owner": true})
	if keys, _ := env.list("grants/", map[string]any{"owner_entity_id": "entity-alice", "status": statusActive}); !slices.Equal(keys, []string{"a1"}) {
		t.Fatalf("LIST owner_entity_id=entity-alice after a2 changed owner = %v", keys)
	}
}

// A use writes the index only once last_used_at moved by an hour: the hot
// path costs at most one index write per grant an hour, and a lease that
// ends costs none.
func TestGrantIndexIsWrittenHourlyOnTheHotPath(t *testing.T) {
	env := newTestEnv(t)
	env.mustWrite("grants/g", map[string]any{"provider": "up", "refresh_token": env.up.mint("read")})
	env.mustWrite("roles/r", map[string]any{"grant": "g"})
	created := env.clock.Now()
	indexWrites := env.countIndexWrites("g")
	var leases []*logical.Response
	use := func() {
		t.Helper()
		resp, err := env.creds("r")
		if err != nil {
			t.Fatal(err)
		}
		leases = append(leases, resp)
	}
	for i := 0; i < 6; i++ {
		use()
		env.clock.Advance(5 * time.Minute)
	}
	if indexWrites.Load() != 0 {
		t.Fatalf("%d index writes for 6 uses within 30 minutes of creation, want 0", indexWrites.Load())
	}
	_, info := env.list("grants/", nil)
	if got := info["g"].(map[string]any)["last_used_at"]; got != formatTime(created) {
		t.Fatalf("last_used_at = %v within the hour, want the indexed creation time %v", got, formatTime(created))
	}
	env.clock.Advance(35 * time.Minute)
	use()
	if indexWrites.Load() != 1 {
		t.Fatalf("%d index writes after an hour of uses, want 1", indexWrites.Load())
	}
	_, info = env.list("grants/", nil)
	ki := info["g"].(map[string]any)
	if ki["last_used_at"] != formatTime(env.clock.Now()) || ki["active_leases"] != int64(7) {
		t.Fatalf("key_info after an hour = %v, want last_used_at %v and 7 leases", ki, formatTime(env.clock.Now()))
	}
	for _, resp := range leases {
		if err := env.revoke(resp); err != nil {
			t.Fatal(err)
		}
	}
	use()
	if indexWrites.Load() != 1 {
		t.Fatalf("%d index writes after leases ended and a use within the hour, want still 1", indexWrites.Load())
	}
	if got := env.grant("g")["active_leases"]; got != int64(1) {
		t.Fatalf("the grant's own active_leases = %v, want 1", got)
	}
}

// A refresh token that gets a new lifetime with every rotation moves
// expires_at on every use: the index follows it hourly, showing it early,
// never late; an end that comes earlier is written at once.
func TestGrantIndexFollowsASlidingExpiryHourly(t *testing.T) {
	env := newTestEnv(t)
	const day = 24 * 3600
	env.up.set(func(f *fakeUpstream) { f.rotate, f.refreshLifetime = true, day })
	env.mustWrite("grants/g", map[string]any{"provider": "up", "refresh_token": env.up.mint("read")})
	env.mustWrite("roles/r", map[string]any{"grant": "g"})
	indexWrites := env.countIndexWrites("g")
	useWithLifetime := func(life int) {
		t.Helper()
		env.up.set(func(f *fakeUpstream) { f.refreshLifetime = life })
		if _, err := env.creds("r"); err != nil {
			t.Fatal(err)
		}
	}
	useWithLifetime(day) // an end appears: written
	if indexWrites.Load() != 1 {
		t.Fatalf("%d index writes when the refresh token got an end, want 1", indexWrites.Load())
	}
	_, info := env.list("grants/", nil)
	first := info["g"].(map[string]any)["expires_at"]
	for i := 1; i <= 5; i++ {
		useWithLifetime(day + i*600) // ten minutes later each time
	}
	_, info = env.list("grants/", nil)
	if got := info["g"].(map[string]any)["expires_at"]; indexWrites.Load() != 1 || got != first {
		t.Fatalf("after an end moved 50 minutes: %d index writes, key_info expires_at %v; want 1 and %v", indexWrites.Load(), got, first)
	}
	useWithLifetime(day + 7*600)
	_, info = env.list("grants/", nil)
	if got := info["g"].(map[string]any)["expires_at"]; indexWrites.Load() != 2 || got != env.grant("g")["expires_at"] {
		t.Fatalf("after an end moved 70 minutes: %d index writes, key_info expires_at %v; want 2 and the grant's %v", indexWrites.Load(), got, env.grant("g")["expires_at"])
	}
	useWithLifetime(day - 600)
	if indexWrites.Load() != 3 {
		t.Fatalf("%d index writes after the end came earlier, want 3", indexWrites.Load())
	}
}

// countIndexWrites counts, from now on, the writes of the index shard
// that holds grant.
func (e *testEnv) countIndexWrites(grant string) *atomic.Int64 {
	n := new(atomic.Int64)
	e.storage.setFailPut(func(key string, _ []byte) error {
		if key == grantIndexPath(grant) {
			n.Add(1)
		}
		return nil
	})
	return n
}

// An index written before the entry had every field, or that lacks a
// grant altogether (a grant stored before the index existed), is answered
// from the grant itself, read once per LIST, so a filter never misses it.
func TestGrantInventoryReadsGrantsTheIndexDoesNotFullyKnow(t *testing.T) {
	env := newTestEnv(t)
	env.mustWrite("grants/old", map[string]any{"provider": "up", "refresh_token": env.up.mint("read")})
	env.mustWrite("grants/unindexed", map[string]any{"provider": "up", "refresh_token": env.up.mint("read")})
	ctx := context.Background()
	if grantIndexPath("old") == grantIndexPath("unindexed") {
		t.Fatal("the test needs the two grants in different shards")
	}
	// The entry an earlier version wrote: provider and status only.
	if err := putJSON(ctx, env.storage, grantIndexPath("old"), grantIndexShard{"old": {Provider: "up", Status: statusActive}}); err != nil {
		t.Fatal(err)
	}
	if err := env.storage.Delete(ctx, grantIndexPath("unindexed")); err != nil {
		t.Fatal(err)
	}
	env.clock.Advance(3 * time.Hour)
	var reads atomic.Int64
	env.storage.setBeforeGet(func(key string) {
		if strings.HasPrefix(key, grantPrefix) {
			reads.Add(1)
		}
	})
	keys, info := env.list("grants/", map[string]any{"unused_for": "2h", "status": "active"})
	if !slices.Equal(keys, []string{"old", "unindexed"}) || reads.Load() != 2 {
		t.Fatalf("LIST unused_for=2h = %v after %d grant reads, want both after 2", keys, reads.Load())
	}
	for _, name := range keys {
		ki := info[name].(map[string]any)
		if ki["provider"] != "up" || !nonEmpty(ki["last_used_at"]) || ki["active_leases"] != int64(0) {
			t.Errorf("key_info of %s = %v", name, ki)
		}
	}
}

// The index of 100,000 grants stays small: a shard holds about 391 of
// them (100,000 / 256), each in well under 160 bytes even with an owner
// entity ID (36 characters, a third of it) and every field set, so a shard
// stays under 64 KiB, far below what Vault's storage backends take in one
// entry.
func TestGrantIndexShardSize(t *testing.T) {
	now := time.Now()
	shard := grantIndexShard{}
	for i := 0; i < 100_000/256+1; i++ {
		g := newGrant(fmt.Sprintf("scale-%06d", i), "corp-github", "7d1e5c38-2f3a-bd4c-9e0f-51a2b3c4d5e6", now)
		g.Status, g.ActiveLeases, g.MaxAge = statusActive, 12, 90*24*time.Hour
		g.LastUsedAt = now.Add(time.Duration(i) * time.Minute)
		shard[g.Name] = indexEntryOf(g)
	}
	entry, err := logical.StorageEntryJSON("index/grants/00", shard)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("a shard of %d grants with every field set: %d bytes, %d per grant", len(shard), len(entry.Value), len(entry.Value)/len(shard))
	if len(entry.Value) > 64<<10 {
		t.Fatalf("a shard of %d grants is %d bytes, want at most 64 KiB", len(shard), len(entry.Value))
	}
}

// A grant whose token_reuse role hands out one shared token records its
// uses hourly even without idle_timeout, so unused_for never calls a busy
// grant stale.
func TestSharedTokenUsesKeepTheGrantOffTheStaleList(t *testing.T) {
	env := newTestEnv(t)
	env.up.set(func(f *fakeUpstream) { f.expiresIn = 7 * 24 * 3600 })
	env.mustWrite("grants/g", map[string]any{"provider": "up", "refresh_token": env.up.mint("read")})
	env.mustWrite("roles/r", map[string]any{"grant": "g", "token_reuse": true})
	if _, err := env.creds("r"); err != nil {
		t.Fatal(err)
	}
	refreshes := env.up.refreshCount()
	for i := 0; i < 4; i++ {
		env.clock.Advance(50 * time.Minute)
		if _, err := env.creds("r"); err != nil {
			t.Fatal(err)
		}
	}
	if env.up.refreshCount() != refreshes {
		t.Fatalf("the shared token was refreshed (%d -> %d); the test needs reuse", refreshes, env.up.refreshCount())
	}
	if keys, _ := env.list("grants/", map[string]any{"unused_for": "2h"}); len(keys) != 0 {
		t.Fatalf("LIST unused_for=2h = %v: a grant used every 50 minutes counted as stale", keys)
	}
}
