package backend

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-plugin-secrets-oauth/vault-plugin-secrets-oauth/backend/oauthclient"
)

// sharedTokens are a token_reuse role's upstream tokens: the one handed to
// new leases (Current) and older ones still held by leases. Each is revoked
// upstream when its last lease ends.
type sharedTokens struct {
	Current string                  `json:"current,omitempty"`
	Tokens  map[string]*sharedToken `json:"tokens"`
}

type sharedToken struct {
	AccessToken   *sealed   `json:"access_token"`
	TokenType     string    `json:"token_type"`
	Scopes        []string  `json:"scopes,omitempty"`
	ScopeReturned bool      `json:"scope_returned"`
	Expiry        time.Time `json:"expiry,omitempty"`
	Provider      string    `json:"provider"`
	GrantID       string    `json:"grant_id,omitempty"`
	Revocation    string    `json:"revocation"`
	Fingerprint   string    `json:"fingerprint"`
	Leases        int64     `json:"leases"`
}

func sharedPath(role string) string { return sharedTokenPfx + role }

func sharedAAD(role, id string) string { return tokenAAD(sharedPath(role) + "/" + id) }

func loadShared(ctx context.Context, s logical.Storage, role string) (*sharedTokens, error) {
	st := &sharedTokens{}
	if _, err := getJSON(ctx, s, sharedPath(role), st); err != nil {
		return nil, fmt.Errorf("reading shared tokens of role %q: %w", role, err)
	}
	if st.Tokens == nil {
		st.Tokens = make(map[string]*sharedToken)
	}
	return st, nil
}

func storeShared(ctx context.Context, s logical.Storage, role string, st *sharedTokens) error {
	if len(st.Tokens) == 0 {
		return s.Delete(ctx, sharedPath(role))
	}
	return putJSON(ctx, s, sharedPath(role), st)
}

// issueShared hands out the role's current token while it has at least
// min_remaining left (and the grant still passes every check), or gets a
// new one. Every lease counts, so the token is revoked only with the last.
func (b *backend) issueShared(ctx context.Context, s logical.Storage, role *roleEntry, cfg *configEntry) (*issuedToken, error) {
	ctx = detached(ctx)
	unlock := b.roleLocks.Lock(role.Name)
	defer unlock()

	st, err := loadShared(ctx, s, role.Name)
	if err != nil {
		return nil, err
	}
	kr, err := b.sealingKeys(ctx, s)
	if err != nil {
		return nil, err
	}
	if it, err := b.reuseCurrent(ctx, s, role, cfg, st, kr); it != nil || err != nil {
		return it, err
	}

	it, err := b.issue(ctx, s, role)
	if err != nil {
		return nil, err
	}
	id := randomID()
	sealedToken, err := kr.seal(it.token.AccessToken, sharedAAD(role.Name, id))
	if err != nil {
		return nil, err
	}
	st.Tokens[id] = &sharedToken{
		AccessToken:   sealedToken,
		TokenType:     it.token.TokenType,
		Scopes:        it.token.Scopes,
		ScopeReturned: it.token.ScopeReturned,
		Expiry:        it.token.Expiry,
		Provider:      it.provider,
		Revocation:    it.revocation,
		Fingerprint:   role.fingerprint(),
		Leases:        1,
	}
	if it.grant != nil {
		st.Tokens[id].GrantID = it.grant.ID
	}
	st.Current = id
	if err := storeShared(ctx, s, role.Name, st); err != nil {
		return nil, err
	}
	it.tokenID, it.shared = id, true
	b.trackOutstanding(ctx, s, it)
	return it, nil
}

// reuseCurrent returns the current shared token with one more lease, or nil
// when a new token is needed.
func (b *backend) reuseCurrent(ctx context.Context, s logical.Storage, role *roleEntry, cfg *configEntry, st *sharedTokens, kr *keyring) (*issuedToken, error) {
	cur := st.Tokens[st.Current]
	if cur == nil || cur.Fingerprint != role.fingerprint() {
		return nil, nil
	}
	if !cur.Expiry.IsZero() && time.Until(cur.Expiry) < max(role.MinRemaining, cfg.RefreshSkew) {
		return nil, nil
	}
	it := &issuedToken{provider: cur.Provider, revocation: cur.Revocation, tokenID: st.Current, shared: true}
	if role.GrantType == grantTypeRefreshToken {
		g, err := getGrant(ctx, s, role.Grant)
		if err != nil {
			return nil, err
		}
		if g == nil || g.ID != cur.GrantID {
			return nil, nil
		}
		if err := b.unusableError(g, time.Now()); err != nil {
			return nil, err
		}
		it.grant = g
	}
	accessToken, err := kr.open(cur.AccessToken, sharedAAD(role.Name, st.Current))
	if err != nil {
		return nil, err
	}
	cur.Leases++
	if err := storeShared(ctx, s, role.Name, st); err != nil {
		return nil, err
	}
	it.token = &oauthclient.Token{
		AccessToken:   accessToken,
		TokenType:     cur.TokenType,
		Scopes:        cur.Scopes,
		ScopeReturned: cur.ScopeReturned,
		Expiry:        cur.Expiry,
	}
	return it, nil
}

// releaseShared ends one lease of a shared token; the last one revokes it.
func (b *backend) releaseShared(ctx context.Context, s logical.Storage, ld *leaseData) error {
	unlock := b.roleLocks.Lock(ld.Role)
	defer unlock()

	st, err := loadShared(ctx, s, ld.Role)
	if err != nil {
		return err
	}
	t := st.Tokens[ld.TokenID]
	if t == nil {
		return nil // already released: revocation is idempotent
	}
	if t.Leases > 1 {
		t.Leases--
		return storeShared(ctx, s, ld.Role, st)
	}
	if ld.Revocation == revocationOnLeaseEnd {
		if err := b.revokeAccessToken(ctx, s, ld); err != nil {
			return err
		}
	}
	delete(st.Tokens, ld.TokenID)
	if st.Current == ld.TokenID {
		st.Current = ""
	}
	return storeShared(ctx, s, ld.Role, st)
}

// sharedLeasesOf counts the leases that hold shared tokens of grant g.
func (b *backend) sharedLeasesOf(ctx context.Context, s logical.Storage, g *grantEntry) (int64, error) {
	roles, err := s.List(ctx, sharedTokenPfx)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, role := range roles {
		st, err := loadShared(ctx, s, role)
		if err != nil {
			return 0, err
		}
		for _, t := range st.Tokens {
			if t.GrantID == g.ID {
				n += t.Leases
			}
		}
	}
	return n, nil
}
