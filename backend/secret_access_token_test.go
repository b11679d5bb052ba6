package backend

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

func TestRenewReverifies(t *testing.T) {
	env := newTestEnv(t)
	env.mustWrite("grants/g", map[string]any{"provider": "up", "refresh_token": env.up.mint("read")})
	env.mustWrite("roles/r", map[string]any{"grant": "g", "verify_on_renew": true, "ttl": 60})
	resp, err := env.creds("r")
	if err != nil {
		t.Fatal(err)
	}
	renew := func() error {
		resp.Secret.IssueTime = time.Now()
		_, err := env.b.HandleRequest(context.Background(), &logical.Request{Operation: logical.RenewOperation, Storage: env.storage, Secret: resp.Secret})
		return err
	}
	if err := renew(); err != nil {
		t.Fatalf("renew: %v", err)
	}
	env.up.mu.Lock()
	env.up.killGrant("g1")
	env.up.mu.Unlock()
	if err := renew(); err == nil || !strings.Contains(err.Error(), "no longer active") {
		t.Fatalf("renew of a dead token: %v", err)
	}
	env.mustWrite("roles/r", map[string]any{"verify_on_renew": false})
	if resp, err := env.do(logical.DeleteOperation, "grants/g", map[string]any{"force": true}); err != nil || resp.IsError() {
		t.Fatalf("forced delete: %v %v", err, resp)
	}
	if g, _ := env.do(logical.ReadOperation, "grants/g", nil); g != nil {
		t.Fatal("grant still there after a forced delete")
	}
	if err := renew(); err == nil || !strings.Contains(err.Error(), "grant") {
		t.Fatalf("renew after grant deletion: %v", err)
	}
}

// Renewal re-checks the role as it is now: narrowing its scopes must not
// leave wider leases renewing.
func TestRenewDeniedWhenTheRoleScopesChanged(t *testing.T) {
	env := newTestEnv(t)
	env.mustWrite("grants/g", map[string]any{"provider": "up", "refresh_token": env.up.mint("read write"), "scopes": "read,write"})
	env.mustWrite("roles/r", map[string]any{"grant": "g", "scopes": "read,write"})
	lease, err := env.creds("r")
	if err != nil {
		t.Fatal(err)
	}
	renew := func() error {
		_, err := env.b.HandleRequest(context.Background(), &logical.Request{
			Operation: logical.RenewOperation, Storage: env.storage, Secret: lease.Secret,
		})
		return err
	}
	if err := renew(); err != nil {
		t.Fatalf("renew: %v", err)
	}
	env.mustWrite("roles/r", map[string]any{"scopes": "read"})
	if err := renew(); err == nil || !strings.Contains(err.Error(), "changed") {
		t.Fatalf("renewal after the role was narrowed: %v", err)
	}
}

// A renewal never takes the lease past the token's expiry less
// refresh_skew, and one that would leave under a second is denied, so a
// consumer reads a new token instead of holding a dying one (Vault Agent
// did, for up to 0.8 s, with a short role ttl).
func TestRenewStopsShortOfTheTokensExpiry(t *testing.T) {
	for _, roleTTL := range []int{0, 2} {
		env := newTestEnv(t)
		env.mustWrite("grants/g", map[string]any{"provider": "up", "refresh_token": env.up.mint("read")})
		env.mustWrite("roles/r", map[string]any{"grant": "g", "ttl": roleTTL})
		lease, err := env.creds("r")
		if err != nil {
			t.Fatal(err)
		}
		lease.Secret.IssueTime = env.b.now()
		expiry, _ := time.Parse(time.RFC3339Nano, lease.Secret.InternalData["expires_at"].(string))
		end := expiry.Add(-10 * time.Second) // the default refresh_skew
		renew := func() (time.Duration, error) {
			resp, err := env.b.HandleRequest(context.Background(), &logical.Request{
				Operation: logical.RenewOperation, Storage: env.storage, Secret: lease.Secret,
			})
			if err != nil {
				return 0, err
			}
			return resp.Secret.TTL, nil
		}
		for _, at := range []time.Duration{time.Minute, 280 * time.Second, 287 * time.Second} {
			env.clock.Advance(at - env.b.now().Sub(lease.Secret.IssueTime))
			before := env.b.now()
			ttl, err := renew()
			if err != nil {
				t.Fatalf("ttl %d, renew at +%s: %v", roleTTL, at, err)
			}
			if before.Add(ttl).After(end) {
				t.Fatalf("ttl %d, renew at +%s: the lease would end %s after the token's expiry less the skew",
					roleTTL, at, before.Add(ttl).Sub(end))
			}
		}
		env.clock.Advance(292*time.Second - env.b.now().Sub(lease.Secret.IssueTime))
		if _, err := renew(); err == nil || !strings.Contains(err.Error(), "refresh_skew") {
			t.Fatalf("ttl %d, renewal inside the skew: %v", roleTTL, err)
		}
	}
}
