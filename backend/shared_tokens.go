package backend

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
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
	// Fields are the provider's response_fields of the token response.
	Fields map[string]string `json:"fields,omitempty"`

	// plain is a new token not yet sealed: flush seals it under the
	// current key as it stores it.
	plain string
}

// sharedEntry is the storage entry of st's tokens: new ones sealed, old
// ones brought to the current key. st.mu and keysMu (read) are held.
func (b *backend) sharedEntry(ctx context.Context, s logical.Storage, st *sharedState) (*logical.StorageEntry, error) {
	kr, err := b.sealingKeys(ctx, s)
	if err != nil {
		return nil, err
	}
	if err := st.tokens.sealNew(kr, st.role); err != nil {
		return nil, err
	}
	if _, err := resealRecord(kr, sharedPath(st.role), st.tokens); err != nil {
		return nil, err
	}
	return logical.StorageEntryJSON(sharedPath(st.role), st.tokens)
}

// sealNew seals the tokens added since the last store.
func (st *sharedTokens) sealNew(kr *keyring, role string) error {
	for id, t := range st.Tokens {
		if t.plain == "" {
			continue
		}
		sealedToken, err := kr.seal(t.plain, sharedAAD(role, id))
		if err != nil {
			return err
		}
		t.AccessToken, t.plain = sealedToken, ""
	}
	return nil
}

// sharedState is the in-memory copy of one role's shared tokens. Every
// change is stored before the request that made it returns, but concurrent
// changes share one write (group commit): the hot path of a token_reuse
// role is one storage write per batch of reads, not per read.
type sharedState struct {
	b    *backend
	role string

	mu       sync.Mutex
	tokens   *sharedTokens // nil until loaded, or after a failed write
	flushing bool
	waiters  []chan error
	// issuing is non-nil while one caller fetches a new token upstream
	// without holding mu; it is closed when that ends.
	issuing chan struct{}
}

func (b *backend) sharedStateOf(role string) *sharedState {
	b.cacheMu.Lock()
	defer b.cacheMu.Unlock()
	st := b.shared[role]
	if st == nil {
		st = &sharedState{b: b, role: role}
		b.shared[role] = st
	}
	return st
}

// loadLocked makes sure st.tokens is present; st.mu is held.
func (st *sharedState) loadLocked(ctx context.Context, s logical.Storage) error {
	if st.tokens != nil {
		return nil
	}
	tokens, err := getSharedTokens(ctx, s, st.role)
	if err != nil {
		return err
	}
	st.tokens = tokens
	return nil
}

// commitLocked queues the current state for storing and returns a wait
// function to call after unlocking st.mu. The first waiter writes for all.
func (st *sharedState) commitLocked(ctx context.Context, s logical.Storage) (wait func() error) {
	ch := make(chan error, 1)
	st.waiters = append(st.waiters, ch)
	leader := !st.flushing
	st.flushing = true
	return func() error {
		if leader {
			st.flush(ctx, s)
		}
		return <-ch
	}
}

func (st *sharedState) flush(ctx context.Context, s logical.Storage) {
	b := st.b
	for {
		st.mu.Lock()
		if len(st.waiters) == 0 {
			st.flushing = false
			st.mu.Unlock()
			return
		}
		batch := st.waiters
		st.waiters = nil
		// Sealed and stored as one step keys/rotate cannot split (see
		// storeSealed): memory may hold a token sealed before a switch.
		b.keysMu.RLock()
		var err error
		var entry *logical.StorageEntry
		if st.tokens == nil {
			err = fmt.Errorf("shared tokens of role %q were dropped after a failed write", st.role)
		} else if len(st.tokens.Tokens) > 0 {
			entry, err = b.sharedEntry(ctx, s, st)
		}
		st.mu.Unlock()

		if err == nil {
			if entry != nil {
				err = s.Put(ctx, entry)
			} else {
				err = s.Delete(ctx, sharedPath(st.role))
			}
		}
		b.keysMu.RUnlock()
		if err != nil {
			// Memory may now be ahead of storage: reload before next use.
			st.mu.Lock()
			st.tokens = nil
			st.mu.Unlock()
		}
		for _, ch := range batch {
			ch <- err
		}
	}
}

// issueShared hands out the role's current token while it has at least
// min_remaining left (and the grant still passes every check), or gets a
// new one. Every lease counts, so the token is revoked only with the last.
// The role's lock is not held across the upstream call for a new token:
// one caller fetches it while the others wait for it (st.issuing), and
// lease releases and grant reads of the role go on meanwhile.
func (b *backend) issueShared(ctx context.Context, s logical.Storage, role *roleEntry, cfg *configEntry) (*issuedToken, error) {
	ctx = detached(ctx)
	st := b.sharedStateOf(role.Name)
	for {
		st.mu.Lock()
		it, err := b.reuseShared(ctx, s, st, role, cfg)
		if err != nil {
			st.mu.Unlock()
			return nil, err
		}
		if it != nil {
			return b.commitShared(ctx, s, st, it) // unlocks st.mu
		}
		if fetching := st.issuing; fetching != nil {
			st.mu.Unlock()
			<-fetching // then try to reuse what it got
			continue
		}
		fetching := make(chan struct{})
		st.issuing = fetching
		st.mu.Unlock()

		it, err = b.issue(ctx, s, role)

		st.mu.Lock()
		st.issuing = nil
		close(fetching)
		if err == nil {
			err = st.loadLocked(ctx, s)
		}
		if err != nil {
			st.mu.Unlock()
			return nil, err
		}
		st.addLocked(role, it)
		return b.commitShared(ctx, s, st, it) // unlocks st.mu
	}
}

// reuseShared loads the role's tokens and returns the current one with one
// more lease, or nil when a new one is needed; st.mu is held.
func (b *backend) reuseShared(ctx context.Context, s logical.Storage, st *sharedState, role *roleEntry, cfg *configEntry) (*issuedToken, error) {
	if err := st.loadLocked(ctx, s); err != nil {
		return nil, err
	}
	kr, err := b.sealingKeys(ctx, s)
	if err != nil {
		return nil, err
	}
	return b.reuseCurrentLocked(ctx, s, role, cfg, st.tokens, kr)
}

// commitShared stores the lease count (and a new token) and unlocks st.mu.
func (b *backend) commitShared(ctx context.Context, s logical.Storage, st *sharedState, it *issuedToken) (*issuedToken, error) {
	wait := st.commitLocked(ctx, s)
	st.mu.Unlock()
	if err := wait(); err != nil {
		return nil, fmt.Errorf("storing shared token of role %q: %w", st.role, err)
	}
	if it.tokenFresh {
		b.trackOutstanding(ctx, s, it)
	}
	return it, nil
}

// reuseCurrentLocked returns the current shared token with one more lease,
// or nil when a new token is needed.
func (b *backend) reuseCurrentLocked(ctx context.Context, s logical.Storage, role *roleEntry, cfg *configEntry, tokens *sharedTokens, kr *keyring) (*issuedToken, error) {
	cur := tokens.Tokens[tokens.Current]
	if cur == nil || cur.Fingerprint != role.fingerprint() {
		return nil, nil
	}
	if !cur.Expiry.IsZero() && cur.Expiry.Sub(b.now()) < max(role.MinRemaining, cfg.RefreshSkew) {
		return nil, nil
	}
	it := &issuedToken{provider: cur.Provider, revocation: cur.Revocation, tokenID: tokens.Current, shared: true}
	if role.GrantType == grantTypeRefreshToken {
		// Zero trust on every lease, also when no refresh is needed.
		g, err := b.checkedGrant(ctx, s, role.Grant)
		if err != nil {
			return nil, err
		}
		if err := role.checkGrantScopes(g); err != nil {
			return nil, err
		}
		if g.ID != cur.GrantID {
			return nil, nil
		}
		it.grant = g
	}
	accessToken := cur.plain // added, not yet stored
	if accessToken == "" {
		var err error
		if accessToken, err = kr.open(cur.AccessToken, sharedAAD(role.Name, tokens.Current)); err != nil {
			return nil, err
		}
	}
	cur.Leases++
	it.token = &oauthclient.Token{
		AccessToken:   accessToken,
		TokenType:     cur.TokenType,
		Scopes:        cur.Scopes,
		ScopeReturned: cur.ScopeReturned,
		Expiry:        cur.Expiry,
		Fields:        cur.Fields,
	}
	return it, nil
}

// addLocked makes a newly issued token the role's current one, with its
// first lease; st.mu is held. It is sealed when stored (flush).
func (st *sharedState) addLocked(role *roleEntry, it *issuedToken) {
	id := randomID()
	t := &sharedToken{
		plain:         it.token.AccessToken,
		TokenType:     it.token.TokenType,
		Scopes:        it.token.Scopes,
		ScopeReturned: it.token.ScopeReturned,
		Expiry:        it.token.Expiry,
		Provider:      it.provider,
		Revocation:    it.revocation,
		Fingerprint:   role.fingerprint(),
		Leases:        1,
		Fields:        it.token.Fields,
	}
	if it.grant != nil {
		t.GrantID = it.grant.ID
	}
	st.tokens.Tokens[id] = t
	st.tokens.Current = id
	it.tokenID, it.shared, it.tokenFresh = id, true, true
}

// releaseShared ends one lease of a shared token; the last one revokes it.
func (b *backend) releaseShared(ctx context.Context, s logical.Storage, ld *leaseData) error {
	st := b.sharedStateOf(ld.Role)
	st.mu.Lock()
	if err := st.loadLocked(ctx, s); err != nil {
		st.mu.Unlock()
		return err
	}
	t := st.tokens.Tokens[ld.TokenID]
	if t == nil {
		st.mu.Unlock()
		return nil // already released: revocation is idempotent
	}
	if t.Leases > 1 {
		t.Leases--
		wait := st.commitLocked(ctx, s)
		st.mu.Unlock()
		return wait()
	}
	// The last lease: stop handing the token out before revoking it, so no
	// new lease can pick up a token that is about to die.
	if st.tokens.Current == ld.TokenID {
		st.tokens.Current = ""
	}
	wait := st.commitLocked(ctx, s)
	st.mu.Unlock()
	if err := wait(); err != nil {
		return err
	}
	if ld.Revocation == revocationOnLeaseEnd {
		if err := b.revokeAccessToken(ctx, s, ld); err != nil {
			return err
		}
	}
	st.mu.Lock()
	if err := st.loadLocked(ctx, s); err != nil {
		st.mu.Unlock()
		return err
	}
	delete(st.tokens.Tokens, ld.TokenID)
	wait = st.commitLocked(ctx, s)
	st.mu.Unlock()
	return wait()
}

// sharedRoles names the roles whose shared tokens are in memory.
func (b *backend) sharedRoles() []string {
	b.cacheMu.RLock()
	defer b.cacheMu.RUnlock()
	return slices.Collect(maps.Keys(b.shared))
}

// sharedLeasesOf counts the leases that hold shared tokens of grant g.
func (b *backend) sharedLeasesOf(ctx context.Context, s logical.Storage, g *grantEntry) (int64, error) {
	roles, err := s.List(ctx, sharedTokenPrefix)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, role := range roles {
		st := b.sharedStateOf(role)
		st.mu.Lock()
		err := st.loadLocked(ctx, s)
		if err == nil {
			for _, t := range st.tokens.Tokens {
				if t.GrantID == g.ID {
					n += t.Leases
				}
			}
		}
		st.mu.Unlock()
		if err != nil {
			return 0, err
		}
	}
	return n, nil
}
