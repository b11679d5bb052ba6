package backend

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

func TestDeleteWhileUpstreamDownKeepsRevoking(t *testing.T) {
	env := newTestEnv(t)
	env.mustWrite("config", map[string]any{"tidy_interval": 1})
	env.mustWrite("grants/g", map[string]any{"provider": "up", "refresh_token": env.up.mint("read")})
	env.mustWrite("roles/r", map[string]any{"grant": "g"})
	env.up.fail("", 503, 503)
	resp, err := env.do(logical.DeleteOperation, "grants/g", nil)
	if err != nil || resp == nil || resp.Data["status"] != statusRevoking || len(resp.Warnings) == 0 {
		t.Fatalf("delete with upstream down: %v %v", err, resp)
	}
	if g := env.grant("g"); g["status"] != statusRevoking {
		t.Fatalf("grant = %v", g)
	}
	if _, err := env.creds("r"); statusOf(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "being revoked") {
		t.Fatalf("creds of a revoking grant: %v", err)
	}
	// The background worker retries until the upstream answers.
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, _ := env.do(logical.ReadOperation, "grants/g", nil)
		if resp == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("grant still there: %v", resp.Data)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if env.up.grantAlive("g1") {
		t.Fatal("refresh token alive after the retried revocation")
	}
}

func TestListGrantsKeyInfoFollowsStatus(t *testing.T) {
	env := newTestEnv(t)
	for _, name := range []string{"a", "b", "c"} {
		env.mustWrite("grants/"+name, map[string]any{"provider": "up", "refresh_token": env.up.mint("read")})
	}
	env.mustWrite("roles/rb", map[string]any{"grant": "b"})
	env.up.fail("invalid_grant", 400)
	if _, err := env.creds("rb"); err == nil {
		t.Fatal("invalid_grant did not fail")
	}
	if _, err := env.do(logical.DeleteOperation, "grants/c", nil); err != nil {
		t.Fatal(err)
	}
	// A grant the index has never seen (written before the index existed,
	// or a crash between the two writes) is still listed, from the grant.
	legacy := &grantEntry{Name: "legacy", ID: randomID(), Provider: "up", Status: statusActive}
	if err := putJSON(context.Background(), env.storage, grantPrefix+"legacy", legacy); err != nil {
		t.Fatal(err)
	}

	resp, err := env.do(logical.ListOperation, "grants/", nil)
	if err != nil {
		t.Fatal(err)
	}
	info := resp.Data["key_info"].(map[string]any)
	want := map[string]string{"a": statusActive, "b": statusInvalid, "legacy": statusActive}
	if len(info) != len(want) {
		t.Fatalf("key_info = %v", info)
	}
	for name, status := range want {
		ki := info[name].(map[string]any)
		if ki["status"] != status || ki["provider"] != "up" {
			t.Fatalf("key_info[%s] = %v, want status %s", name, ki, status)
		}
	}
}

func TestLifecycleSweep(t *testing.T) {
	env := newTestEnv(t)
	env.mustWrite("config", map[string]any{"tidy_interval": 1})
	env.mustWrite("grants/plain", map[string]any{"provider": "up", "refresh_token": env.up.mint("read")})
	env.mustWrite("grants/alive", map[string]any{"provider": "up", "refresh_token": env.up.mint("read"), "keep_alive": 1})
	env.mustWrite("grants/old", map[string]any{"provider": "up", "refresh_token": env.up.mint("read"), "max_age": 1})
	env.mustWrite("grants/idle", map[string]any{"provider": "up", "refresh_token": env.up.mint("read"), "idle_timeout": 1, "keep_alive": 3600})
	ctx := context.Background()
	due, err := env.storage.List(ctx, duePrefix)
	if err != nil || len(due) == 0 {
		t.Fatalf("due index = %v, %v", due, err)
	}
	if g, _ := getGrant(ctx, env.storage, "plain"); !g.DueAt.IsZero() {
		t.Fatal("a grant without max_age, idle_timeout or keep_alive was scheduled")
	}

	// The background worker (tidy_interval 1s) does the rest by itself.
	deadline := time.Now().Add(15 * time.Second)
	for {
		alive, old, idle := env.grant("alive"), env.grant("old"), env.grant("idle")
		if alive["refresh_count"].(int64) >= 2 && old["status"] == statusExpired && idle["status"] == statusExpired {
			if alive["last_used_at"] != "" {
				t.Fatalf("keep_alive refreshes counted as uses: %v", alive)
			}
			if alive["status"] != statusActive || alive["rotation_count"].(int64) != alive["refresh_count"].(int64) {
				t.Fatalf("keep_alive grant = %v", alive)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sweep did not act: alive=%v old=%v idle=%v", alive, old, idle)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Expired grants had their refresh tokens revoked upstream (g3, g4).
	eventuallyTrue(t, func() bool { return !env.up.grantAlive("g3") && !env.up.grantAlive("g4") })
	if !env.up.grantAlive("g1") {
		t.Fatal("the plain grant was touched")
	}
	if g := env.grant("plain"); g["refresh_count"].(int64) != 0 || g["status"] != statusActive {
		t.Fatalf("plain grant = %v", g)
	}
}

// Replacing a grant's refresh token (re-import, re-authorization) used to
// leave the old one alive upstream.
func TestReplacedRefreshTokenIsRevokedUpstream(t *testing.T) {
	env := newTestEnv(t)
	old := env.up.mint("read")
	env.mustWrite("grants/g", map[string]any{"provider": "up", "refresh_token": old})
	env.mustWrite("grants/g", map[string]any{"refresh_token": env.up.mint("read")})
	env.sweep()
	if !env.up.wasRevoked(old) || env.up.grantAlive("g1") {
		t.Fatal("the replaced refresh token is still alive upstream")
	}
	if !env.up.grantAlive("g2") {
		t.Fatal("the new refresh token was revoked")
	}
	// The queue is empty afterwards.
	if keys, _ := listAll(context.Background(), env.storage, replacedPrefix); len(keys) != 0 {
		t.Fatalf("replaced tokens still queued: %v", keys)
	}
}

// The queue never revokes a token that is still the grant's own (a crash
// between queueing and storing the replacement).
func TestReplacedQueueSparesTheGrantsOwnToken(t *testing.T) {
	env := newTestEnv(t)
	env.mustWrite("grants/g", map[string]any{"provider": "up", "refresh_token": env.up.mint("read")})
	g := env.storedGrant("g")
	if err := env.b.queueReplaced(context.Background(), env.storage, g); err != nil {
		t.Fatal(err)
	}
	env.sweep()
	if !env.up.grantAlive("g1") {
		t.Fatal("the queue revoked the grant's current refresh token")
	}
}

// Re-importing into an expired grant starts its lifecycle again instead of
// expiring it at once.
func TestReimportRestartsTheLifecycleClocks(t *testing.T) {
	env := newTestEnv(t)
	env.mustWrite("grants/g", map[string]any{"provider": "up", "refresh_token": env.up.mint("read"), "max_age": 3600})
	env.clock.Advance(2 * time.Hour)
	env.mustWrite("roles/r", map[string]any{"grant": "g"})
	if _, err := env.creds("r"); statusOf(err) != http.StatusBadRequest {
		t.Fatalf("creds past max_age: %v", err)
	}
	env.mustWrite("grants/g", map[string]any{"refresh_token": env.up.mint("read")})
	if g := env.grant("g"); g["status"] != statusActive {
		t.Fatalf("re-imported grant = %v", g)
	}
	if _, err := env.creds("r"); err != nil {
		t.Fatalf("creds after re-import: %v", err)
	}
}

// owner_entity_id could be cleared by any grant writer, letting a departing
// owner's grant escape offboarding.
func TestChangingTheOwnerNeedsChangeOwner(t *testing.T) {
	env := newTestEnv(t)
	ctx := context.Background()
	if _, err := env.b.HandleRequest(ctx, &logical.Request{
		Operation: logical.CreateOperation, Path: "grants/g", Storage: env.storage, EntityID: "entity-alice",
		Data: map[string]any{"provider": "up", "refresh_token": env.up.mint("read")},
	}); err != nil {
		t.Fatal(err)
	}
	resp, err := env.do(logical.UpdateOperation, "grants/g", map[string]any{"owner_entity_id": ""})
	if err != nil || !resp.IsError() || !strings.Contains(resp.Error().Error(), "change_owner") {
		t.Fatalf("clearing the owner without change_owner: %v %v", err, resp)
	}
	if g := env.grant("g"); g["owner_entity_id"] != "entity-alice" {
		t.Fatalf("owner changed anyway: %v", g)
	}
	if resp := env.mustWrite("grants/g", map[string]any{"owner_entity_id": "", "change_owner": true}); resp.Data["owner_entity_id"] != "" {
		t.Fatalf("change_owner did not change it: %v", resp.Data)
	}
}

// A provider that cannot revoke refresh tokens (unsupported_token_type)
// left a deleted grant revoking for ever.
func TestDeleteFinishesWhenTheProviderCannotRevoke(t *testing.T) {
	env := newTestEnv(t)
	env.mustWrite("grants/g", map[string]any{"provider": "up", "refresh_token": env.up.mint("read")})
	env.up.fail("unsupported_token_type", http.StatusBadRequest)
	resp, err := env.do(logical.DeleteOperation, "grants/g", nil)
	if err != nil || resp == nil || len(resp.Warnings) == 0 || !strings.Contains(resp.Warnings[0], "not revoked") {
		t.Fatalf("delete: %v %v", err, resp)
	}
	if g, _ := env.do(logical.ReadOperation, "grants/g", nil); g != nil {
		t.Fatalf("grant kept: %v", g.Data)
	}
}

// Where the upstream reports who authorized a token, the grant records it,
// and a re-authorization by someone else says so.
func TestReauthorizationBySomeoneElseIsFlagged(t *testing.T) {
	env := newTestEnv(t)
	env.mustWrite("grants/g", map[string]any{"provider": "up", "refresh_token": env.up.mint("read")})
	env.mustWrite("roles/r", map[string]any{"grant": "g"})
	if g := env.grant("g"); g["subject"] != "user-g1" || fmt.Sprint(g["roles"]) != "[r]" {
		t.Fatalf("grant = %v", g)
	}
	resp := env.mustWrite("grants/g", map[string]any{"refresh_token": env.up.mint("read")})
	if len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "user-g2") || !strings.Contains(resp.Warnings[0], "user-g1") {
		t.Fatalf("re-import by another subject: warnings %v", resp.Warnings)
	}
	if g := env.grant("g"); g["subject"] != "user-g2" {
		t.Fatalf("grant = %v", g)
	}
}

// The revocation is queued before the grant is marked expired: a failure
// between the two writes must never leave an expired grant whose refresh
// token nobody will revoke.
func TestExpiryQueuesTheRevocationFirst(t *testing.T) {
	env := newTestEnv(t)
	env.up.set(func(f *fakeUpstream) { f.failNext = []int{503, 503, 503, 503} }) // revocation stays queued
	env.mustWrite("grants/g", map[string]any{"provider": "up", "refresh_token": env.up.mint("read"), "max_age": 60})
	env.storage.setFailPut(func(key string, _ []byte) error {
		if key == revokingPath("g") {
			return errInjected
		}
		return nil
	})
	env.clock.Advance(2 * time.Minute)
	env.sweep()
	g := env.storedGrant("g")
	queued, _ := getRevocationMarker(context.Background(), env.storage, "g")
	if g.Status == statusExpired && queued == nil {
		t.Fatal("grant marked expired with no revocation queued for its refresh token")
	}
	env.storage.setFailPut(nil)
	env.up.set(func(f *fakeUpstream) { f.failNext = nil })
	env.clock.Advance(2 * time.Minute)
	env.sweep()
	env.sweep()
	if g := env.storedGrant("g"); g.Status != statusExpired || env.up.grantAlive("g1") {
		t.Fatalf("after storage came back: status %s, refresh token alive upstream: %v", g.Status, env.up.grantAlive("g1"))
	}
}
