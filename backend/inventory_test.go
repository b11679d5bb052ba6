package backend

import (
	"context"
	"fmt"
	"slices"
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

// A use writes the index only when last_used_at moved by an hour (or the
// grant's leases went from none to some): the hot path stays one write.
func TestGrantIndexIsWrittenHourlyOnTheHotPath(t *testing.T) {
	env := newTestEnv(t)
	env.mustWrite("grants/g", map[string]any{"provider": "up", "refresh_token": env.up.mint("read")})
	env.mustWrite("roles/r", map[string]any{"grant": "g"})
	indexWrites := 0
	env.storage.setFailPut(func(key string, _ []byte) error {
		if key == grantIndexPath("g") {
			indexWrites++
		}
		return nil
	})
	if _, err := env.creds("r"); err != nil { // leases 0 -> 1: written
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		env.clock.Advance(5 * time.Minute)
		if _, err := env.creds("r"); err != nil {
			t.Fatal(err)
		}
	}
	if indexWrites != 1 {
		t.Fatalf("%d index writes for 6 uses within 30 minutes, want 1", indexWrites)
	}
	_, info := env.list("grants/", nil)
	if got := info["g"].(map[string]any)["last_used_at"]; got == formatTime(env.clock.Now()) {
		t.Fatalf("last_used_at %v moved with every use", got)
	}
	env.clock.Advance(40 * time.Minute)
	if _, err := env.creds("r"); err != nil {
		t.Fatal(err)
	}
	if indexWrites != 2 {
		t.Fatalf("%d index writes after an hour of uses, want 2", indexWrites)
	}
	_, info = env.list("grants/", nil)
	if got := info["g"].(map[string]any)["last_used_at"]; got != formatTime(env.clock.Now()) {
		t.Fatalf("last_used_at = %v after an hour, want %v", got, formatTime(env.clock.Now()))
	}
}

// An index written before the entry had every field is read from the
// grant itself, so a filter never misses it.
func TestGrantInventoryReadsGrantsTheIndexDoesNotFullyKnow(t *testing.T) {
	env := newTestEnv(t)
	env.mustWrite("grants/old", map[string]any{"provider": "up", "refresh_token": env.up.mint("read")})
	ctx := context.Background()
	// The entry an earlier version wrote: provider and status only.
	if err := putJSON(ctx, env.storage, grantIndexPath("old"), grantIndexShard{"old": {Provider: "up", Status: statusActive}}); err != nil {
		t.Fatal(err)
	}
	env.clock.Advance(3 * time.Hour)
	keys, info := env.list("grants/", map[string]any{"unused_for": "2h"})
	if !slices.Equal(keys, []string{"old"}) || fmt.Sprint(info["old"].(map[string]any)["last_used_at"]) == "" {
		t.Fatalf("LIST unused_for=2h = %v %v", keys, info)
	}
}
