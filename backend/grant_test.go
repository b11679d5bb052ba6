package backend

import (
	"context"
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
