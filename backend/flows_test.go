package backend

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

func TestCallbackMapsARejectedCodeTo400(t *testing.T) {
	env := newTestEnv(t)
	env.mustWrite("config", map[string]any{"redirect_uri": "http://127.0.0.1:8200/v1/oauth/callback"})
	env.mustWrite("providers/up", map[string]any{"authorization_url": env.up.URL + "/authorize"})
	resp := env.mustWrite("grants/web/authorize", map[string]any{"provider": "up", "scopes": "read"})
	state := resp.Data["state"].(string)
	if g := env.grant("web"); g["status"] != statusPending {
		t.Fatalf("grant = %v", g)
	}
	_, err := env.do(logical.ReadOperation, "callback", map[string]any{"state": state, "code": "not-a-code"})
	if statusOf(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "invalid_grant") {
		t.Fatalf("rejected code: %v", err)
	}
	if g := env.grant("web"); g["status"] != statusInvalid || !nonEmpty(g["last_error"]) {
		t.Fatalf("grant after a failed flow = %v", g)
	}
	// The state was used up by the failed attempt.
	if resp, err := env.do(logical.ReadOperation, "callback", map[string]any{"state": state, "code": "x"}); err == nil && !resp.IsError() {
		t.Fatal("state accepted twice")
	}
}

func TestMaxPendingAuthorizations(t *testing.T) {
	env := newTestEnv(t)
	env.mustWrite("config", map[string]any{"redirect_uri": "http://127.0.0.1:8200/v1/oauth/callback", "max_pending_authorizations": 2})
	env.mustWrite("providers/up", map[string]any{"authorization_url": env.up.URL + "/authorize"})
	for _, name := range []string{"a", "b"} {
		env.mustWrite("grants/"+name+"/authorize", map[string]any{"provider": "up"})
	}
	_, err := env.do(logical.UpdateOperation, "grants/c/authorize", map[string]any{"provider": "up"})
	if statusOf(err) != http.StatusTooManyRequests || !strings.Contains(err.Error(), "max_pending_authorizations") {
		t.Fatalf("third pending authorization: %v", err)
	}
	if resp, _ := env.do(logical.ReadOperation, "grants/c", nil); resp != nil {
		t.Fatalf("a refused authorization left a grant behind: %v", resp.Data)
	}
	// A missing redirect_uri is named.
	env.mustWrite("config", map[string]any{"redirect_uri": ""})
	resp, err := env.do(logical.UpdateOperation, "grants/d/authorize", map[string]any{"provider": "up"})
	if err != nil || !resp.IsError() || !strings.Contains(resp.Error().Error(), "redirect_uri") {
		t.Fatalf("authorize without redirect_uri: %v %v", err, resp)
	}
}

// authorizeNew starts a code flow for a new grant and returns its state.
func authorizeNew(t *testing.T, env *testEnv, name string) string {
	t.Helper()
	env.mustWrite("config", map[string]any{"redirect_uri": "http://127.0.0.1:8200/v1/oauth/callback"})
	env.mustWrite("providers/up", map[string]any{"authorization_url": env.up.URL + "/authorize"})
	resp := env.mustWrite("grants/"+name+"/authorize", map[string]any{"provider": "up", "scopes": "read"})
	return resp.Data["state"].(string)
}

func TestCallbackCompletesTheGrant(t *testing.T) {
	env := newTestEnv(t)
	state := authorizeNew(t, env, "web")
	resp, err := env.do(logical.ReadOperation, "callback", map[string]any{"state": state, "code": env.up.issueCode("read")})
	if err != nil || resp.Data["status"] != statusActive || resp.Data["grant"] != "web" {
		t.Fatalf("callback: %v %v", err, resp)
	}
	env.mustWrite("roles/r", map[string]any{"grant": "web"})
	if _, err := env.creds("r"); err != nil {
		t.Fatal(err)
	}
}

// Single use was load-then-delete: two concurrent callbacks with one state
// could both exchange a code.
func TestCallbackStateIsSingleUseUnderConcurrency(t *testing.T) {
	env := newTestEnv(t)
	for round := 0; round < 20; round++ {
		name := fmt.Sprintf("web%d", round)
		state := authorizeNew(t, env, name)
		codes := []string{env.up.issueCode("read"), env.up.issueCode("read")}
		before := env.up.exchangeCount()
		var wg sync.WaitGroup
		var ok atomic.Int64
		for _, code := range codes {
			wg.Add(1)
			go func(code string) {
				defer wg.Done()
				if resp, err := env.do(logical.ReadOperation, "callback", map[string]any{"state": state, "code": code}); err == nil && !resp.IsError() {
					ok.Add(1)
				}
			}(code)
		}
		wg.Wait()
		if n := env.up.exchangeCount() - before; n != 1 || ok.Load() != 1 {
			t.Fatalf("round %d: one state led to %d code exchanges and %d successes", round, n, ok.Load())
		}
	}
}

// A pending grant whose flow ended without completing (the state was used
// and the node died before recording the outcome) used to stay pending.
func TestPendingGrantWithoutAFlowIsEnded(t *testing.T) {
	env := newTestEnv(t)
	state := authorizeNew(t, env, "web")
	// The state is consumed and nothing else happens.
	if err := env.storage.Delete(context.Background(), pendingPath(pendingKeyForState(state))); err != nil {
		t.Fatal(err)
	}
	env.clock.Advance(authorizationLifetime + pendingGrace + time.Minute)
	env.sweep()
	g := env.grant("web")
	if g["status"] != statusInvalid || !strings.Contains(g["last_error"].(string), "without completing") {
		t.Fatalf("grant after its flow vanished = %v", g)
	}
}

func TestPendingAuthorizationsPerGrantAreCappedBeforeUpstream(t *testing.T) {
	env := newTestEnv(t)
	authorizeNew(t, env, "web")
	for i := 1; i < maxPendingPerGrant; i++ {
		env.mustWrite("grants/web/authorize", nil)
	}
	_, err := env.do(logical.UpdateOperation, "grants/web/authorize", nil)
	if statusOf(err) != http.StatusTooManyRequests || !strings.Contains(err.Error(), "web") {
		t.Fatalf("authorization %d of one grant: %v", maxPendingPerGrant+1, err)
	}
	// Another grant is not affected.
	env.mustWrite("grants/other/authorize", map[string]any{"provider": "up"})
}

// A provider whose metadata says it always sends iss (RFC 9207) must send
// it: a response without one may come from a mix-up attacker.
func TestCallbackRequiresIssWhenTheProviderAdvertisesIt(t *testing.T) {
	env := newTestEnv(t)
	env.mustWrite("config", map[string]any{"redirect_uri": "http://127.0.0.1:8200/v1/oauth/callback"})
	env.mustWrite("providers/disc", map[string]any{"issuer": env.up.URL, "client_id": "vault", "client_secret": "s"})
	state := env.mustWrite("grants/web/authorize", map[string]any{"provider": "disc"}).Data["state"].(string)
	_, err := env.do(logical.ReadOperation, "callback", map[string]any{"state": state, "code": env.up.issueCode("read")})
	if statusOf(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "iss") {
		t.Fatalf("callback without iss: %v", err)
	}
	state = env.mustWrite("grants/web2/authorize", map[string]any{"provider": "disc"}).Data["state"].(string)
	resp, err := env.do(logical.ReadOperation, "callback", map[string]any{"state": state, "code": env.up.issueCode("read"), "iss": env.up.URL})
	if err != nil || resp.Data["status"] != statusActive {
		t.Fatalf("callback with the right iss: %v %v", err, resp)
	}
}

func TestDeviceFlowPollsUntilApproved(t *testing.T) {
	env := newTestEnv(t)
	env.up.set(func(f *fakeUpstream) {
		f.devicePolls = []string{"authorization_pending", "slow_down", "authorization_pending", ""}
	})
	env.mustWrite("providers/up", map[string]any{"device_authorization_url": env.up.URL + "/device"})
	resp := env.mustWrite("grants/tv/device", map[string]any{"provider": "up", "scopes": "read"})
	if resp.Data["user_code"] != "ABCD-EFGH" || resp.Data["interval"] != int64(1) {
		t.Fatalf("device = %v", resp.Data)
	}
	for i := 0; i < 10 && env.grant("tv")["status"] == statusPending; i++ {
		env.clock.Advance(10 * time.Second)
		env.sweep()
	}
	if g := env.grant("tv"); g["status"] != statusActive {
		t.Fatalf("grant after approval = %v", g)
	}
	env.mustWrite("roles/r", map[string]any{"grant": "tv"})
	if _, err := env.creds("r"); err != nil {
		t.Fatal(err)
	}
	if keys, _ := env.storage.List(context.Background(), pendingPrefix); len(keys) != 0 {
		t.Fatalf("pending records left: %v", keys)
	}
}

func TestDeviceFlowDeniedEndsTheGrant(t *testing.T) {
	env := newTestEnv(t)
	env.up.set(func(f *fakeUpstream) { f.devicePolls = []string{"authorization_pending", "access_denied"} })
	env.mustWrite("providers/up", map[string]any{"device_authorization_url": env.up.URL + "/device"})
	env.mustWrite("grants/tv/device", map[string]any{"provider": "up"})
	for i := 0; i < 5; i++ {
		env.clock.Advance(10 * time.Second)
		env.sweep()
	}
	if g := env.grant("tv"); g["status"] != statusInvalid || !strings.Contains(g["last_error"].(string), "denied") {
		t.Fatalf("grant after denial = %v", g)
	}
}
