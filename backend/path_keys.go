package backend

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

func pathKeysRotate(b *backend) *framework.Path {
	return &framework.Path{
		Pattern: "keys/rotate$",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: operationPrefix,
			OperationVerb:   "rotate",
			OperationSuffix: "sealing-key",
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.UpdateOperation: forwarded(b.pathKeysRotate),
		},
		HelpSynopsis:    "Rotate the key that seals refresh tokens and re-seal everything.",
		HelpDescription: keysRotateHelp,
	}
}

// resealCounts says how many sealed values keys/rotate re-sealed.
type resealCounts struct {
	grants, providers, shared, outstanding int
}

func (b *backend) pathKeysRotate(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	ctx = detached(ctx)
	b.keysMu.Lock()
	defer b.keysMu.Unlock()
	start := time.Now()
	s := req.Storage

	old, err := b.sealingKeys(ctx, s)
	if err != nil {
		return nil, err
	}
	key, err := newAESKey()
	if err != nil {
		return nil, err
	}
	kr := &keyring{Keys: maps.Clone(old.Keys)}
	for v := range kr.Keys {
		kr.Current = max(kr.Current, v)
	}
	kr.Current++
	kr.Keys[kr.Current] = key
	if err := putJSON(ctx, s, keyringPath, kr); err != nil {
		return nil, err
	}
	// From here on every new seal uses the new key; the old ones stay
	// readable until everything has been re-sealed.
	b.setKeyring(kr)

	var n resealCounts
	if err := b.resealAll(ctx, s, kr, &n); err != nil {
		return nil, fmt.Errorf("re-sealing under key version %d stopped (run keys/rotate again to finish): %w", kr.Current, err)
	}
	final := &keyring{Current: kr.Current, Keys: map[int][]byte{kr.Current: key}}
	if err := putJSON(ctx, s, keyringPath, final); err != nil {
		return nil, err
	}
	b.setKeyring(final)
	b.cacheMu.Lock()
	b.providers = make(map[string]*providerHandle)
	b.cacheMu.Unlock()

	return &logical.Response{Data: map[string]any{
		"key_version":          final.Current,
		"grants_resealed":      n.grants,
		"providers_resealed":   n.providers,
		"shared_resealed":      n.shared,
		"outstanding_resealed": n.outstanding,
		"duration_ms":          time.Since(start).Milliseconds(),
	}}, nil
}

func (b *backend) resealAll(ctx context.Context, s logical.Storage, kr *keyring, n *resealCounts) error {
	grants, err := s.List(ctx, grantPrefix)
	if err != nil {
		return err
	}
	if err := b.resealGrants(ctx, s, kr, grants, n); err != nil {
		return err
	}
	providers, err := s.List(ctx, providerPrefix)
	if err != nil {
		return err
	}
	for _, name := range providers {
		p, err := getProvider(ctx, s, name)
		if err != nil || p == nil {
			return err
		}
		c1, err := resealInPlace(kr, &p.ClientSecret, providerAAD(name, "client_secret"))
		if err != nil {
			return fmt.Errorf("provider %q: %w", name, err)
		}
		c2, err := resealInPlace(kr, &p.ClientPrivateKey, providerAAD(name, "client_private_key"))
		if err != nil {
			return fmt.Errorf("provider %q: %w", name, err)
		}
		if c1 || c2 {
			if err := putJSON(ctx, s, providerPrefix+name, p); err != nil {
				return err
			}
			n.providers++
		}
	}
	roles, err := s.List(ctx, sharedTokenPfx)
	if err != nil {
		return err
	}
	for _, role := range roles {
		if err := b.resealShared(ctx, s, kr, role, n); err != nil {
			return err
		}
	}
	pending, err := s.List(ctx, pendingPrefix)
	if err != nil {
		return err
	}
	for _, key := range pending {
		p, err := b.loadPending(ctx, s, key)
		if err != nil {
			return err
		}
		if p == nil {
			continue
		}
		changed, err := resealInPlace(kr, &p.Secret, pendingAAD(key))
		if err != nil {
			return fmt.Errorf("pending authorization of grant %q: %w", p.Grant, err)
		}
		if changed {
			if err := putJSON(ctx, s, pendingPrefix+key, p); err != nil {
				return err
			}
		}
	}
	grantIDs, err := s.List(ctx, outstandingPfx)
	if err != nil {
		return err
	}
	for _, gid := range grantIDs {
		ids, err := s.List(ctx, outstandingPfx+gid)
		if err != nil {
			return err
		}
		for _, id := range ids {
			path := outstandingPfx + gid + id
			var ot outstandingToken
			ok, err := getJSON(ctx, s, path, &ot)
			if err != nil {
				return err
			}
			changed, err := resealInPlace(kr, &ot.AccessToken, tokenAAD(path))
			if err != nil {
				return err
			}
			if ok && changed {
				if err := putJSON(ctx, s, path, &ot); err != nil {
					return err
				}
				n.outstanding++
			}
		}
	}
	return nil
}

// resealWorkers bounds how many grants are re-sealed at once: each is a
// storage read and write, so a few in flight hide the round trips.
const resealWorkers = 8

func (b *backend) resealGrants(ctx context.Context, s logical.Storage, kr *keyring, names []string, n *resealCounts) error {
	var (
		next     atomic.Int64
		resealed atomic.Int64
		firstErr error
		errOnce  sync.Once
		wg       sync.WaitGroup
	)
	for w := 0; w < resealWorkers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(names) || ctx.Err() != nil {
					return
				}
				changed, err := b.resealGrant(ctx, s, kr, names[i])
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					next.Store(int64(len(names))) // stop the others
					return
				}
				if changed {
					resealed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	n.grants += int(resealed.Load())
	return firstErr
}

func (b *backend) resealGrant(ctx context.Context, s logical.Storage, kr *keyring, name string) (bool, error) {
	unlock := b.grantLocks.Lock(name)
	defer unlock()
	g, err := getGrant(ctx, s, name)
	if err != nil || g == nil {
		return false, err
	}
	changed, err := resealInPlace(kr, &g.RefreshToken, g.aad())
	if err != nil {
		return false, fmt.Errorf("grant %q: %w", name, err)
	}
	if !changed {
		return false, nil
	}
	return true, b.putGrant(ctx, s, g)
}

func (b *backend) resealShared(ctx context.Context, s logical.Storage, kr *keyring, role string, n *resealCounts) error {
	st := b.sharedStateOf(role)
	st.mu.Lock()
	if err := st.loadLocked(ctx, s); err != nil {
		st.mu.Unlock()
		return err
	}
	changed := false
	for id, t := range st.tokens.Tokens {
		c, err := resealInPlace(kr, &t.AccessToken, sharedAAD(role, id))
		if err != nil {
			st.mu.Unlock()
			return fmt.Errorf("shared token of role %q: %w", role, err)
		}
		changed = changed || c
	}
	if !changed {
		st.mu.Unlock()
		return nil
	}
	wait := st.commitLocked(ctx, s)
	st.mu.Unlock()
	n.shared++
	return wait()
}

func resealInPlace(kr *keyring, s **sealed, aad string) (bool, error) {
	out, changed, err := kr.reseal(*s, aad)
	if err != nil || !changed {
		return false, err
	}
	*s = out
	return true, nil
}

const keysRotateHelp = `
Creates a new AES-256-GCM sealing key and re-seals every refresh token,
client secret, private key and stored access token under it, then retires
the old key. If re-sealing stops half way, the old key is kept and running
keys/rotate again finishes the job.
`
