package backend

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
)

func TestValidationNamesTheField(t *testing.T) {
	env := newTestEnv(t)
	for _, tc := range []struct {
		path  string
		data  map[string]any
		field string
	}{
		{"providers/p", map[string]any{"client_id": "c", "client_secret": "s", "token_url": "http://idp.example.com/token"}, "token_url"},
		{"providers/p", map[string]any{"client_id": "c", "client_secret": "s", "token_url": "https://169.254.169.254/token"}, "token_url"},
		{"providers/p", map[string]any{"token_url": "https://idp.example.com/token", "client_secret": "s"}, "client_id"},
		{"providers/p", map[string]any{"token_url": "https://idp.example.com/token", "client_id": "c"}, "client_secret"},
		{"providers/p", map[string]any{"token_url": "https://idp.example.com/token", "client_id": "c", "client_auth": "none", "token_params": "grant_type=x"}, "token_params"},
		{"grants/g", map[string]any{"provider": "up"}, "refresh_token"},
		{"grants/g", map[string]any{"provider": "nope", "refresh_token": "x"}, "provider"},
		{"roles/r", map[string]any{"grant": "missing"}, "grant"},
		{"roles/r", map[string]any{"grant_type": "client_credentials"}, "provider"},
		{"config", map[string]any{"tidy_interval": 0}, "tidy_interval"},
		// What a field's type cannot say (input.go): enumerations, sizes,
		// control characters, negative numbers, the name's length.
		{"roles/r", map[string]any{"grant_type": "password", "provider": "up"}, "grant_type"},
		{"roles/r", map[string]any{"grant_type": "", "grant": "g"}, "grant_type"},
		{"providers/p", map[string]any{"token_url": "https://idp.example.com/token", "client_id": "c", "client_secret": "s", "client_auth": "client_secret_jwt"}, "client_auth"},
		{"providers/p", map[string]any{"token_url": "https://idp.example.com/token", "client_id": "c", "client_secret": "s", "response_mode": "fragment"}, "response_mode"},
		{"providers/p", map[string]any{"token_url": "https://idp.example.com/token", "client_id": "c\x1b[31m", "client_secret": "s"}, "client_id"},
		{"providers/p", map[string]any{"token_url": "https://idp.example.com/" + strings.Repeat("a", 4096), "client_id": "c", "client_secret": "s"}, "token_url"},
		{"providers/p", map[string]any{"token_url": "https://idp.example.com/token", "client_id": "c", "client_secret": "s", "token_params": map[string]any{"k": "v\r\nx"}}, "token_params"},
		{"providers/p", map[string]any{"token_url": "https://idp.example.com/token", "client_id": "c", "client_secret": "s", "scopes": strings.Repeat("s", 4096)}, "scopes"},
		{"providers/" + strings.Repeat("n", 200), map[string]any{"token_url": "https://idp.example.com/token", "client_id": "c", "client_secret": "s"}, "name"},
		{"grants/g", map[string]any{"provider": "up", "refresh_token": "rt\x00"}, "refresh_token"},
		{"grants/g", map[string]any{"provider": "up", "refresh_token": strings.Repeat("r", 1<<20)}, "refresh_token"},
		{"grants/g", map[string]any{"provider": "up", "code": strings.Repeat("c", 1<<20), "redirect_uri": "https://vault.example.com/v1/oauth/callback"}, "code"},
		{"grants/g", map[string]any{"provider": "up", "code": "c", "redirect_uri": "https://vault.example.com/v1/oauth/callback", "code_verifier": "short"}, "code_verifier"},
		{"grants/g", map[string]any{"provider": "up", "refresh_token": "rt", "max_age": "-5m"}, "max_age"},
		{"grants/g/device", map[string]any{"provider": "up", "scopes": strings.Repeat("s", 1<<20)}, "scopes"},
		{"callback", map[string]any{"state": "s", "code": "c\x00"}, "code"},
	} {
		op := logical.CreateOperation
		if tc.path == "config" || tc.path == "callback" || strings.HasSuffix(tc.path, "/device") {
			op = logical.UpdateOperation
		}
		resp, err := env.do(op, tc.path, tc.data)
		if err == nil && (resp == nil || !resp.IsError()) {
			t.Errorf("%s %v accepted", tc.path, tc.data)
			continue
		}
		msg := fmt.Sprint(err)
		if resp != nil && resp.IsError() {
			msg = resp.Error().Error()
		}
		if !strings.Contains(msg, tc.field) {
			t.Errorf("%s: error %q does not name %s", short(tc.path), msg, tc.field)
		}
	}
	// Nothing refused above was stored or sent upstream.
	for _, coll := range []string{"providers/", "grants/", "roles/"} {
		keys, err := env.storage.List(context.Background(), strings.TrimSuffix(coll, "/")+"/")
		if err != nil {
			t.Fatal(err)
		}
		if coll == "providers/" && len(keys) == 1 && keys[0] == "up" {
			continue
		}
		if len(keys) > 0 {
			t.Errorf("refused writes stored %s%v", coll, keys)
		}
	}
	if n := env.up.exchangeCount() + env.up.refreshCount(); n != 0 {
		t.Errorf("refused writes made %d upstream requests", n)
	}
}

func short(s string) string {
	if len(s) > 60 {
		return fmt.Sprintf("%s...(%d bytes)", s[:60], len(s))
	}
	return s
}
