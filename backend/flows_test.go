package backend

import (
	"net/http"
	"strings"
	"testing"

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
	if g := env.grant("web"); g["status"] != statusInvalid || g["last_error"] == "" {
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
