package backend

import (
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
	} {
		op := logical.CreateOperation
		if tc.path == "config" {
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
			t.Errorf("%s %v: error %q does not name %s", tc.path, tc.data, msg, tc.field)
		}
	}
}
