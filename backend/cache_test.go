package backend

import (
	"context"
	"testing"
)

// Invalidate (another node's write) and local writes drop the same caches;
// a config change used to keep provider clients built with the old timeout.
func TestInvalidateDropsWhatOtherNodesChange(t *testing.T) {
	env := newTestEnv(t)
	ctx := context.Background()
	env.mustWrite("grants/g", map[string]any{"provider": "up", "refresh_token": env.up.mint("read")})
	env.mustWrite("roles/r", map[string]any{"grant": "g", "token_reuse": true})
	for i := 0; i < 2; i++ { // the second reuses the token: the grant is cached
		if _, err := env.creds("r"); err != nil {
			t.Fatal(err)
		}
	}
	cached := func() (cfg, kr, provider, role, grant, shared bool) {
		b := env.b
		b.cacheMu.RLock()
		defer b.cacheMu.RUnlock()
		return b.config != nil, b.keyring != nil, b.providers["up"] != nil, b.roles["r"] != nil, b.grants["g"] != nil, b.shared["r"] != nil
	}
	if cfg, kr, p, r, g, s := cached(); !cfg || !kr || !p || !r || !g || !s {
		t.Fatalf("caches not populated: config=%v keyring=%v provider=%v role=%v grant=%v shared=%v", cfg, kr, p, r, g, s)
	}
	for _, key := range []string{configPath, keyringPath, rolePath("r"), grantPath("g"), sharedPath("r")} {
		env.b.Invalidate(ctx, key)
	}
	if cfg, kr, p, r, g, s := cached(); cfg || kr || p || r || g || s {
		t.Fatalf("caches kept after invalidation: config=%v keyring=%v provider=%v role=%v grant=%v shared=%v", cfg, kr, p, r, g, s)
	}
	// A provider key drops only that provider's client.
	if _, err := env.creds("r"); err != nil {
		t.Fatal(err)
	}
	env.b.Invalidate(ctx, providerPath("up"))
	if _, _, p, _, _, _ := cached(); p {
		t.Fatal("provider client kept after its invalidation")
	}
}
